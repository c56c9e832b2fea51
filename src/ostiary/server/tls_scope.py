"""Hand the TLS peer certificate to the ASGI app, as the ASGI TLS extension describes.

uvicorn terminates TLS but does not put the client certificate in the scope. The ASGI spec
has an extension for it (``scope["extensions"]["tls"]``, "TLS Extension" in the ASGI
specification) with, among others, ``client_cert_chain``: the PEM certificates the client
presented, leaf first, already verified by the TLS layer.

:class:`TLSScopeHttpToolsProtocol` is uvicorn's httptools protocol (the fast C parser,
used by the server) that, once per connection (the handshake is complete when
``connection_made`` runs), reads the peer certificate from the transport's
:class:`ssl.SSLObject` and wraps the app so that every request on the connection carries the
extension. :class:`TLSScopeH11Protocol` does the same over the pure-Python h11 parser. Either
is passed to uvicorn as ``Config(http=...)``; on a plain-HTTP connection they add nothing (the
spec says the key is then absent).

Both also record the connection's TCP peer address in the scope (``extensions`` key
:data:`PEER_EXTENSION`), before uvicorn's proxy-headers middleware may rewrite ``client``
from ``X-Forwarded-For``: per-address limits (:mod:`ostiary.server.limits`) count by the
peer, which a caller cannot choose.

Python 3.11 exposes only the leaf (``getpeercert(binary_form=True)``); from 3.13
``get_verified_chain()`` gives the chain the handshake verified, and it is used when present.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: The ``extensions`` key of the connection's TCP peer host (a string).
PEER_EXTENSION = "ostiary.peer"

#: ``tls_version`` values of the extension (the TLS ProtocolVersion code points).
_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


#: Seconds a client has to send a request's head (request line and headers) on the HTTPS
#: listener, from the connection or the previous response on.
HEAD_TIMEOUT = 10.0
#: Connections a listener keeps open at once (per process), by default (``ca serve
#: --max-connections``); one past it is closed at once.
MAX_CONNECTIONS = 4096


def tls_extension(ssl_object: ssl.SSLObject) -> dict[str, Any]:
    """The ASGI ``tls`` extension for one established TLS connection."""
    chain_der = _peer_chain_der(ssl_object)
    chain_pem = [_der_to_pem(der) for der in chain_der]
    name = None
    if chain_der:
        name = x509.load_der_x509_certificate(chain_der[0]).subject.rfc4514_string()
    version = ssl_object.version()
    return {
        "server_cert": None,
        "client_cert_chain": chain_pem,
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(version or ""),
        "cipher_suite": None,
    }


def client_certificate(scope: Scope) -> x509.Certificate | None:
    """The verified client certificate of the request's connection, if one was presented."""
    tls = scope.get("extensions", {}).get("tls")
    if not tls or not tls.get("client_cert_chain"):
        return None
    leaf: str = tls["client_cert_chain"][0]
    return x509.load_pem_x509_certificate(leaf.encode("ascii"))


def peer_address(scope: Scope) -> str | None:
    """The TCP peer host of the request's connection, as the protocol recorded it; else the
    scope's ``client`` (an app called without our protocols, e.g. in-process).
    """
    peer = scope.get("extensions", {}).get(PEER_EXTENSION)
    if isinstance(peer, str):
        return peer
    client = scope.get("client")
    return str(client[0]) if client else None


class _WithConnection:
    """Adds one connection's ``tls`` extension (if any) and its peer to each scope."""

    __slots__ = ("app", "extension", "peer")

    def __init__(self, app: ASGIApp, extension: dict[str, Any] | None, peer: str | None) -> None:
        self.app = app
        self.extension = extension
        self.peer = peer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        extensions = scope.setdefault("extensions", {})
        if self.extension is not None:
            extensions["tls"] = self.extension
        if self.peer is not None:
            extensions[PEER_EXTENSION] = self.peer
        await self.app(scope, receive, send)


class TLSScopeH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, adding the ASGI TLS extension on TLS connections."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.app = _with_connection(self.app, transport, self.client)


class TLSScopeHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, adding the ASGI TLS extension on TLS connections, and a
    deadline for each request's head.

    uvicorn arms no timer until a first response is sent, and its keep-alive timer stops at
    the first byte of the next request: a client that sends nothing after the handshake, or
    sends a head a byte at a time (slowloris), would hold its connection for good. Here the
    whole head must arrive within :data:`HEAD_TIMEOUT` seconds of the connection (or of the
    previous response); else the connection is closed.
    """

    _head_deadline: asyncio.TimerHandle | None = None
    #: Open connections past which a new one is closed at once (None: no limit).
    max_connections: int | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limit = self.max_connections
        if limit is not None and len(self.connections) > limit:
            # Closed at once rather than answered 503: an answer would first read a request
            # (a slow client's to send), and a client that cannot connect tries another
            # replica or later, as after a 503. uvicorn's own limit_concurrency answers 503
            # after the head and would turn off the direct /sign path (api_http.py).
            transport.close()
            return
        self.app = _with_connection(self.app, transport, self.client)
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        self._head_deadline = self.loop.call_later(HEAD_TIMEOUT, self._head_too_slow)

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        cycle = self.cycle
        if cycle is None or cycle.response_complete:  # no request whose head arrived
            self.transport.close()


def around(app: ASGIApp, inner: ASGIApp) -> ASGIApp:
    """What a protocol of this module made of its app for one connection (``app``: the TLS
    extension and the peer put in every scope), around ``inner`` instead.
    """
    if isinstance(app, _WithConnection):
        return _WithConnection(inner, app.extension, app.peer)
    return inner


def _with_connection(
    app: ASGIApp, transport: asyncio.Transport, client: tuple[str, int] | None
) -> ASGIApp:
    # uvloop's own TLS transport hands out an ssl.SSLObject too.
    ssl_object = transport.get_extra_info("ssl_object")
    extension = tls_extension(ssl_object) if isinstance(ssl_object, ssl.SSLObject) else None
    return _WithConnection(app, extension, client[0] if client else None)


def _peer_chain_der(ssl_object: ssl.SSLObject) -> list[bytes]:
    verified = getattr(ssl_object, "get_verified_chain", None)
    if verified is not None:  # Python >= 3.13
        chain = verified()  # DER bytes, leaf first
        if chain:
            return [bytes(der) for der in chain]
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def _der_to_pem(der: bytes) -> str:
    certificate = x509.load_der_x509_certificate(der)
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


__all__ = [
    "HEAD_TIMEOUT",
    "PEER_EXTENSION",
    "TLSScopeH11Protocol",
    "TLSScopeHttpToolsProtocol",
    "around",
    "client_certificate",
    "peer_address",
    "tls_extension",
]
