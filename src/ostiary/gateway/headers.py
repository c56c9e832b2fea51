"""Which request headers reach the upstream, and which the gateway sets itself.

Who the client is and how it reached us are the gateway's to say, so every incoming header
that says either is dropped, whatever its case, and the gateway's own are appended:

- dropped: the identity headers (:data:`~ostiary.gateway.identity.IDENTITY_HEADERS`, and
  ``X-Client-Cert``, which our nginx snippet sets); the forwarding headers ``Forwarded``
  (RFC 7239), ``X-Forwarded-For``, ``-Proto``, ``-Host``, ``-Port``, ``-Prefix``,
  ``X-Real-IP``; ``X-Original-URL`` and ``X-Rewrite-URL`` (read by some frameworks as the
  request path, past the route rules); the hop-by-hop headers (RFC 9110 section 7.6.1).
- dropped too: **every header whose name contains ``_``**, as nginx does by default. CGI and
  WSGI servers map ``_`` and ``-`` to the same variable and join duplicates, the client's
  value first: ``X_Client_Subject: CN=admin`` would be read as ``CN=admin,<ours>``.
- set: the identity headers, ``X-Forwarded-For`` (the client's address),
  ``X-Forwarded-Proto: https``, ``X-Forwarded-Host`` (the request's ``Host``) and
  ``Forwarded: for=...;proto=https;host="..."``, all from the real connection.
"""

from __future__ import annotations

from ostiary.gateway.identity import IDENTITY_HEADERS, ClientIdentity

#: Headers that say how the client reached us (or which path it asked for).
FORWARDING_HEADERS = frozenset(
    {
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-real-ip",
        b"x-original-url",
        b"x-rewrite-url",
    }
)
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"upgrade", b"transfer-encoding"}
)

#: Lower-case request header names never passed on (``transfer-encoding`` is handled apart:
#: the body is re-framed). A name containing ``_`` is dropped as well (see the docstring).
DROP_REQUEST = (IDENTITY_HEADERS | FORWARDING_HEADERS | HOP_BY_HOP) - {b"transfer-encoding"}


def connection_headers(identity: ClientIdentity, peer: str) -> tuple[bytes, bytes]:
    """For one client connection: the header block appended to every request (identity,
    ``X-Forwarded-For``, ``-Proto``, ending the head), and the ``Forwarded`` element's
    ``for=...;proto=https`` part (the request's ``host=`` is added per request).
    """
    address = peer.encode("ascii")
    node = b'"[%b]"' % address if b":" in address else address  # RFC 7239 section 6
    block = (
        identity.header_block
        + b"x-forwarded-for: "
        + address
        + b"\r\nx-forwarded-proto: https\r\n\r\n"
    )
    return block, b"for=" + node + b";proto=https"


def host_headers(host: bytes | None, forwarded: bytes) -> bytes:
    """``X-Forwarded-Host`` and ``Forwarded`` for a request whose ``Host`` is ``host``."""
    if host is None:
        return b"forwarded: " + forwarded + b"\r\n"
    quoted = host
    if b'"' in host or b"\\" in host:  # a quoted-string escapes these (RFC 9110 5.6.4)
        quoted = host.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    return (
        b"x-forwarded-host: "
        + host
        + b"\r\nforwarded: "
        + forwarded
        + b';host="'
        + quoted
        + b'"\r\n'
    )
