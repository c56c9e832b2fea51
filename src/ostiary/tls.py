"""The one factory of :class:`ssl.SSLContext` objects: every TLS endpoint Ostiary opens or
connects to gets its context here, so the protocol floor and the trust rules live in one file.
One exception: the gateway's client-facing side runs on pyOpenSSL (the OpenSSL that
cryptography bundles, for the handshake's cost), with these settings mirrored in
:mod:`ostiary.gateway.tls_context`.

- :func:`server_context`: TLS 1.2+ with a :class:`TLSIdentity` (chain + key). It may ask for a
  client certificate (``optional`` or ``required``), verified against the given trust anchors
  (RFC 8446 4.3.2 CertificateRequest; RFC 5246 7.4.4).
- :func:`client_context`: TLS 1.2+, hostname checked, trusting only the given roots, with an
  optional client identity for mTLS.
- :func:`unverified_client_context`: TLS 1.2+ that accepts any certificate, for ACME
  tls-alpn-01 validation, which checks the certificate itself.
- :func:`load_identity`: put a new chain and key into a *live* context; handshakes that start
  afterwards present it (OpenSSL copies the context's certificate into each new connection).

Contexts take certificate and key *objects*. OpenSSL's Python binding only loads key
material from files, so :func:`load_identity` writes the key encrypted under a random,
in-memory password into a private temporary directory (0700) and deletes it at once.

``check_client_time=False`` makes the handshake accept a client certificate outside its
validity period (OpenSSL ``X509_V_FLAG_NO_CHECK_TIME``): the chain must still verify to the
anchors, but the application decides about time, so that the CA server can answer an expired
certificate with a clear problem document (or renew it within a grace window) instead of a
TLS alert. Whoever uses such a context must check validity itself.
"""

from __future__ import annotations

import os
import secrets
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

#: OpenSSL's ``X509_V_FLAG_NO_CHECK_TIME`` (x509_vfy.h); the ssl module has no name for it.
_NO_CHECK_TIME = 0x200000

#: The TLS 1.2 cipher suites of Mozilla's "intermediate" configuration (server side, ECDHE
#: only: no DHE parameters are set): AEAD only, forward secret. TLS 1.3 suites are OpenSSL's
#: defaults, all of which the configuration allows.
INTERMEDIATE_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)

ClientCertificates = Literal["none", "optional", "required"]

_VERIFY_MODES: dict[ClientCertificates, ssl.VerifyMode] = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


@dataclass(frozen=True)
class TLSIdentity:
    """A certificate chain (leaf first, then its issuers) and the leaf's private key."""

    chain: tuple[x509.Certificate, ...]
    private_key: CertificateIssuerPrivateKeyTypes

    @property
    def certificate(self) -> x509.Certificate:
        return self.chain[0]


def server_context(
    identity: TLSIdentity,
    *,
    client_certificates: ClientCertificates = "none",
    client_trust: Sequence[x509.Certificate] = (),
    check_client_time: bool = True,
    session_tickets: bool = True,
) -> ssl.SSLContext:
    """A server context presenting ``identity``.

    With ``client_certificates`` ``optional`` or ``required``, a client certificate must chain
    to a self-signed certificate in ``client_trust``; non-self-signed certificates given there
    help build the chain (a client may send its leaf alone) but are never anchors.

    Without ``session_tickets``, resumable sessions are kept in the context's own cache and
    a client gets only their ID (TLS 1.2 session IDs, TLS 1.3 stateful tickets) instead of
    the session encrypted under a ticket key. That is cheaper per full handshake: OpenSSL
    3.0 builds each stateless ticket by encoding the session, decoding it again (the client
    certificate's public key through its slow decoder) and encrypting it, twice per TLS 1.3
    handshake; and it keeps no long-lived key that could decrypt recorded sessions. The cost:
    sessions resume only in the process (and context) that made them, which is already so
    for tickets when each process has its own random ticket key.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_ciphers(INTERMEDIATE_CIPHERS)
    if not session_tickets:
        context.options |= ssl.OP_NO_TICKET
    load_identity(context, identity)
    if client_certificates != "none":
        if not client_trust:
            raise ValueError("asking for client certificates needs trust anchors")
        context.load_verify_locations(cadata=_pem(client_trust))
        context.verify_mode = _VERIFY_MODES[client_certificates]
        if not check_client_time:
            context.verify_flags |= _NO_CHECK_TIME
    return context


def client_context(
    roots: Sequence[x509.Certificate], *, identity: TLSIdentity | None = None
) -> ssl.SSLContext:
    """A client context trusting only ``roots``, presenting ``identity`` if given."""
    if not roots:
        raise ValueError("a TLS client needs at least one root to trust")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=_pem(roots))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if identity is not None:
        load_identity(context, identity)
    return context


def web_client_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """A client context for servers that are not ours (an OpenID provider): TLS 1.2+,
    hostname checked, trusting the system store, or only the PEM roots in ``ca_file``.
    """
    if ca_file is None:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    else:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def unverified_client_context(alpn: Sequence[str] = ()) -> ssl.SSLContext:
    """A client context that accepts any certificate, offering the ``alpn`` protocols.

    Only for a caller that checks the presented certificate itself, as ACME tls-alpn-01
    validation does (RFC 8737 section 3: the certificate is self-signed by design). TLS 1.2+.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def load_identity(context: ssl.SSLContext, identity: TLSIdentity) -> None:
    """Install ``identity`` in ``context``; new handshakes use it, open connections keep theirs."""
    password = secrets.token_bytes(32)
    key_pem = identity.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    with tempfile.TemporaryDirectory(prefix="ostiary-tls-") as directory:
        chain_path = Path(directory) / "chain.pem"
        key_path = Path(directory) / "key.pem"
        _write_private(chain_path, _pem(identity.chain).encode("ascii"))
        _write_private(key_path, key_pem)
        context.load_cert_chain(chain_path, key_path, password=password)


def _write_private(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def _pem(certificates: Sequence[x509.Certificate]) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certificates)


__all__ = [
    "ClientCertificates",
    "TLSIdentity",
    "client_context",
    "load_identity",
    "server_context",
    "unverified_client_context",
    "web_client_context",
]
