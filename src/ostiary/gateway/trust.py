"""What the gateway trusts and presents, loaded from files into a TLS context for the clients'
side (pyOpenSSL, :mod:`ostiary.gateway.tls_context`) and an :class:`ssl.SSLContext` towards an
https upstream (the one factory, :mod:`ostiary.tls`), and the post-handshake path check.

OpenSSL verifies the client's chain during the handshake against the ``ca_roots`` files only
(the system store is never loaded), with the intermediates the client sent; it may stop at
an intermediate from those files (partial chain), whose own link to a root is checked here
after the handshake, on the whole path (once per leaf, see :func:`load`). That path is built
with cryptography's verifier from the leaf, the intermediates in the ``ca_roots`` files, and
the ``extra`` ones the caller found (those the client sent, or fetched from caIssuers:
:mod:`ostiary.gateway.issuers`):
that finds the issuing CA for the thumbprint allowlist and for revocation. When a certificate
of the path names an issuer found nowhere, :class:`IssuerUnknown` says which.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from OpenSSL import SSL

from ostiary.core.chain import verify_certificate_chain
from ostiary.core.encoding import load_certificate_chain
from ostiary.core.errors import BadRequest, InvalidCertificate, NotFound
from ostiary.gateway.config import GatewayConfig
from ostiary.gateway.tls_context import client_auth_server_context
from ostiary.tls import TLSIdentity, client_context

_CACHE_SIZE = 10_000
_MAX_DEPTH = 8


class IssuerUnknown(InvalidCertificate):
    """No certificate at hand is the issuer of ``certificate`` (a link of the path)."""

    def __init__(self, certificate: x509.Certificate) -> None:
        issuer = certificate.issuer.rfc4514_string()
        super().__init__(f"issuer-unknown: {issuer}", reason="issuer-unknown", issuer=issuer)
        self.certificate = certificate


@dataclass(frozen=True, slots=True)
class _Verified:
    """A verified path, and the time window in which every certificate of it is valid."""

    path: tuple[x509.Certificate, ...]
    valid_from: datetime
    valid_until: datetime


@dataclass(frozen=True)
class Trust:
    """Anchors, path-building helpers, and the optional issuing-CA allowlist."""

    roots: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...]
    issuer_thumbprints: frozenset[str]
    #: Leaves already verified (DER -> path): a path does not change while this trust is
    #: loaded, only time does, and the validity of every certificate in it is checked on
    #: every use (as one window).
    _verified: dict[bytes, _Verified] = field(default_factory=dict, compare=False)

    def verify(
        self,
        leaf: x509.Certificate,
        *,
        now: datetime,
        der: bytes | None = None,
        extra: Sequence[x509.Certificate] = (),
    ) -> tuple[x509.Certificate, ...]:
        """The verified path of a valid ``leaf``: the leaf, its issuing CA, ..., the root.
        ``der`` is the leaf's encoding, if the caller has it; ``extra`` are intermediates
        found elsewhere (untrusted helpers, like the files' ones). Raises
        :class:`IssuerUnknown` when a link is missing, else :class:`InvalidCertificate`.
        """
        if der is None:
            der = leaf.public_bytes(serialization.Encoding.DER)
        known = self._verified.get(der)
        if known is not None and known.valid_from <= now <= known.valid_until:
            return known.path
        helpers = (*self.intermediates, *extra)
        self._check_links(leaf, helpers)
        path = self._verify(leaf, helpers, now=now)
        if len(self._verified) >= _CACHE_SIZE:
            self._verified.clear()
        self._verified[der] = _Verified(
            path,
            max(c.not_valid_before_utc for c in path),
            min(c.not_valid_after_utc for c in path),
        )
        return path

    def _check_links(self, leaf: x509.Certificate, helpers: Sequence[x509.Certificate]) -> None:
        """Follow issuer names from ``leaf`` up: raise :class:`IssuerUnknown` at the first
        certificate whose issuer is neither a root nor among ``helpers`` (names only: the
        verifier checks signatures afterwards).
        """
        roots = {root.subject for root in self.roots}
        by_subject = {helper.subject: helper for helper in helpers}
        current = leaf
        for _ in range(_MAX_DEPTH):
            if current.issuer in roots:
                return
            found = by_subject.get(current.issuer)
            if found is None:
                raise IssuerUnknown(current)
            if found is current:
                return
            current = found

    def _verify(
        self, leaf: x509.Certificate, helpers: Sequence[x509.Certificate], *, now: datetime
    ) -> tuple[x509.Certificate, ...]:
        path = tuple(
            verify_certificate_chain(leaf, intermediates=helpers, roots=self.roots, now=now).chain
        )
        issuer = path[1] if len(path) > 1 else path[0]
        if self.issuer_thumbprints:
            thumbprint = issuer.fingerprint(hashes.SHA256()).hex()
            if thumbprint not in self.issuer_thumbprints:
                raise InvalidCertificate(
                    "the issuing CA is not in the thumbprint allowlist", reason="issuer-not-allowed"
                )
        return path


@dataclass(frozen=True)
class Loaded:
    """One generation of the files: the TLS context and the trust it was built from."""

    context: SSL.Context  # the clients' side (pyOpenSSL: ostiary.gateway.tls_context)
    trust: Trust
    stamp: tuple[tuple[str, int, int], ...]
    upstream_context: ssl.SSLContext | None = None  # for an https:// upstream


def files_stamp(config: GatewayConfig) -> tuple[tuple[str, int, int], ...]:
    """Modification times and sizes of every file the gateway reads (to notice changes)."""
    stamps = []
    extra = (config.upstream_ca, config.upstream_cert, config.upstream_key)
    for path in (config.cert, config.key, *config.ca_roots, *(p for p in extra if p)):
        try:
            info = os.stat(path)
        except OSError:
            stamps.append((str(path), -1, -1))
            continue
        stamps.append((str(path), info.st_mtime_ns, info.st_size))
    return tuple(stamps)


def load(config: GatewayConfig) -> Loaded:
    """Read certificate, key and trust; raise a readable error if anything is wrong."""
    stamp = files_stamp(config)
    anchors: list[x509.Certificate] = []
    helpers: list[x509.Certificate] = []
    for path in config.ca_roots:
        for certificate in load_certificate_chain(_read(path, "CA root")):
            (anchors if certificate.issuer == certificate.subject else helpers).append(certificate)
    if not anchors:
        raise BadRequest("the CA root files hold no self-signed root to anchor trust")
    chain = tuple(load_certificate_chain(_read(config.cert, "certificate")))
    key = _load_key(config.key)
    # Worker processes are spawned, each with its own ticket key, and a reload makes a new
    # context: tickets would resume no further than a session cache does, at a higher price
    # per handshake (see ostiary.tls.server_context). The handshake may end the chain at a
    # pinned intermediate (partial chain): OpenSSL still checks the client's signature, the
    # leaf's signature by that intermediate, and the validity and usage of both, but not the
    # intermediate's signature by the root again on every handshake (a third ECDSA
    # verification, ~10 % of a full handshake's instructions). That link is checked after
    # the handshake, with the whole path to a pinned root (``Trust.verify``, once per leaf
    # and load; then its validity window on every use): a path that does not reach a root
    # is refused there, as before.
    context = client_auth_server_context(
        TLSIdentity(chain=chain, private_key=key),
        [*anchors, *helpers],
        partial_chain=bool(helpers),
        session_tickets=False,
    )
    trust = Trust(tuple(anchors), tuple(helpers), frozenset(config.issuer_thumbprints))
    return Loaded(context, trust, stamp, _upstream_context(config))


def _upstream_context(config: GatewayConfig) -> ssl.SSLContext | None:
    """The client context towards an https:// upstream: only ``upstream_ca`` is trusted, the
    upstream's name is checked, and ``upstream_cert``/``upstream_key`` are presented if given.
    """
    if config.upstream_ca is None:
        return None
    roots = load_certificate_chain(_read(config.upstream_ca, "upstream CA"))
    identity = None
    if config.upstream_cert is not None and config.upstream_key is not None:
        identity = TLSIdentity(
            chain=tuple(
                load_certificate_chain(_read(config.upstream_cert, "upstream certificate"))
            ),
            private_key=_load_key(config.upstream_key),
        )
    return client_context(roots, identity=identity)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"no {what} file at {path}") from None
    except OSError as exc:
        raise BadRequest(f"cannot read the {what} file {path}: {exc.strerror}") from None


def _load_key(path: Path) -> CertificateIssuerPrivateKeyTypes:
    data = _read(path, "key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise BadRequest(f"{path}: the gateway needs an unencrypted key file (0600)") from None
    except ValueError:
        raise BadRequest(f"{path}: not a PEM private key") from None
    return key  # type: ignore[return-value]
