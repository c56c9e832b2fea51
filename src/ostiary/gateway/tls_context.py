"""The gateway's client-facing TLS context, on the OpenSSL that cryptography's wheel bundles
(through pyOpenSSL) rather than the system's that Python's :mod:`ssl` links.

Most of a full mTLS handshake is OpenSSL's own work (docs/BENCHMARKS.md, "What a newer
OpenSSL would buy"): the server end of one costs some 0.56x on the bundled OpenSSL 4 of what
it costs on the system's 3.0 (``bench/tls_libraries.py``). The records then go through
:mod:`ostiary.gateway.tls_transport`.

The settings are those :func:`ostiary.tls.server_context` gives an ``ssl.SSLContext`` with a
client certificate required (Mozilla "intermediate", as ``tests/gateway/test_tls_posture.py``
checks): TLS 1.2 and 1.3, the same TLS 1.2 suites, the TLS 1.3 suites and key-exchange
groups of the profile named explicitly (OpenSSL 4's defaults add groups the profile lacks),
no compression, the server's cipher order, session tickets off unless asked for, and the
same session ID context as Python's ``ssl`` gives every context. The client's chain is
verified by OpenSSL with no Python callback (one would run per certificate), against the
given trust only (no system store); the certificate request names no CAs, as with ``ssl``.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from OpenSSL import SSL, crypto
from OpenSSL._util import lib as _lib  # groups: pyOpenSSL has no public call for a list

from ostiary.tls import INTERMEDIATE_CIPHERS, TLSIdentity

#: TLS 1.3 suites of Mozilla "intermediate" (all of OpenSSL's defaults, in its order).
TLS13_CIPHERSUITES = b"TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"
#: Key-exchange groups of Mozilla "intermediate" (X25519, prime256v1, secp384r1).
GROUPS = b"X25519:P-256:P-384"
#: The session ID context Python's ``ssl`` sets on every context: OpenSSL refuses to resume
#: a session of a verified client without one.
_SESSION_ID_CONTEXT = b"Python"


def client_auth_server_context(
    identity: TLSIdentity,
    client_trust: Sequence[x509.Certificate],
    *,
    partial_chain: bool = False,
    session_tickets: bool = False,
) -> SSL.Context:
    """A server context presenting ``identity`` that requires a client certificate chaining
    to ``client_trust`` (self-signed ones are anchors, the others help build the chain;
    with ``partial_chain`` a path may also end at one of those, see :mod:`.trust`).
    """
    if not client_trust:
        raise ValueError("asking for client certificates needs trust anchors")
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    options = SSL.OP_ALL | SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE
    if not session_tickets:
        options |= SSL.OP_NO_TICKET
    context.set_options(options)
    # OpenSSL's record buffers (some 34 kB) freed while a connection is idle, as Python's ssl
    # and nginx have it.
    context.set_mode(SSL.MODE_RELEASE_BUFFERS)
    context.set_cipher_list(INTERMEDIATE_CIPHERS.encode("ascii"))
    context.set_tls13_ciphersuites(TLS13_CIPHERSUITES)
    if _lib.SSL_CTX_set1_curves_list(context._context, GROUPS) != 1:
        raise ValueError("OpenSSL refused the key-exchange groups")
    context.set_session_id(_SESSION_ID_CONTEXT)
    context.use_certificate(identity.certificate)
    for certificate in identity.chain[1:]:
        context.add_extra_chain_cert(certificate)
    context.use_privatekey(identity.private_key)  # type: ignore[arg-type]
    context.check_privatekey()
    store = context.get_cert_store()
    if store is None:
        raise ValueError("OpenSSL gave the context no certificate store")
    for certificate in client_trust:
        store.add_cert(crypto.X509.from_cryptography(certificate))
    if partial_chain:
        store.set_flags(crypto.X509StoreFlags.PARTIAL_CHAIN)
    context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT)
    return context


__all__ = ["GROUPS", "TLS13_CIPHERSUITES", "client_auth_server_context"]
