"""TLS for the gateway's client connections on pyOpenSSL (the OpenSSL cryptography's wheel
bundles, :mod:`ostiary.gateway.tls_context`), over the event loop's plain TCP transport.

:func:`accept_tls` waits for the client's first byte holding no TLS state (as
:func:`ostiary.tls_accept.accept_tls` does), then puts a :class:`TLSTransport` on the socket:
the protocol of the TCP transport (uvloop's, in C, moves the bytes) and the transport the
gateway's protocols (:mod:`.http`, :mod:`.pipe`) see. Records go through memory BIOs: bytes
received are written into OpenSSL's read BIO, plaintext is read out (``SSL_read``), and what
OpenSSL produces (handshake messages, records, alerts) is read from its write BIO and
written to the TCP transport at once, so the only write buffer is the TCP transport's: its
size and limits, and its ``pause_writing``/``resume_writing``, are the ones the protocol gets.

Reading follows the protocol: while it has paused reading, the TCP transport is paused and
no plaintext is read out (OpenSSL keeps the records received); on resume, what is buffered is
delivered first, in a later loop iteration. The protocol's ``connection_made`` comes when the
handshake is done; what the client sent with its last handshake flight (a request, say)
follows at once.

Records are moved by calling OpenSSL directly (through pyOpenSSL's cffi binding) with one
buffer per thread: pyOpenSSL's ``recv``/``bio_read`` allocate a buffer on every call and
raise an exception for "no more data", which doubled the pump's cost per small request
(~7 µs against ~3.5 µs, as much as Python's ``ssl`` called the same way). Errors are still
raised by pyOpenSSL, as its own calls would.

Closing sends a close_notify and then closes the TCP transport (once its buffer is written);
a client's close_notify or end of stream closes the connection (TLS has no half-close). A
session stays resumable however the connection ended: OpenSSL drops a session from its cache
when its connection is freed without a close_notify sent (a rule from SSL 3.0 that TLS 1.1
and later no longer ask for), and many clients just close the socket; the connection is
marked shut down before it is freed, as nginx does (``SSL_set_shutdown`` before ``SSL_free``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL, crypto
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib

from ostiary.tls_accept import first_byte

log = logging.getLogger(__name__)

#: Bytes asked of OpenSSL per read, plaintext or records (a record holds at most 16 kB).
_CHUNK = 65536

_HANDSHAKE, _OPEN, _CLOSING, _CLOSED = range(4)
_WANT_READ = _lib.SSL_ERROR_WANT_READ
_buffers = threading.local()  # the gateway is one loop per thread (tests run several)


def _thread_buffer() -> Any:
    """The buffer OpenSSL's reads go to, one per thread (cffi releases the GIL in a call)."""
    buffer = getattr(_buffers, "buffer", None)
    if buffer is None:
        buffer = _buffers.buffer = _ffi.new("char[]", _CHUNK)
    return buffer


class HandshakeFailed(ConnectionError):
    """The TLS handshake failed; ``reason`` is OpenSSL's (``peer did not return a
    certificate``, ``certificate verify failed``, ...) or what ended the connection.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def accept_tls(
    sock: socket.socket, protocol: asyncio.Protocol, context: SSL.Context, *, timeout: float
) -> TLSTransport:
    """TLS on an accepted ``sock`` for ``protocol``: its transport once the handshake is
    done (``protocol.connection_made`` has been called).

    :class:`TimeoutError` when the client has not completed it ``timeout`` seconds from now;
    :class:`OSError` (:class:`HandshakeFailed`) when it fails. The caller closes ``sock`` then.
    """
    left = await first_byte(sock, timeout)
    loop = asyncio.get_running_loop()
    tls = TLSTransport(context, protocol, loop)
    await loop.connect_accepted_socket(lambda: tls, sock)
    try:
        await asyncio.wait_for(tls.handshake, left)
    except HandshakeFailed:
        raise  # the connection is closing already, after OpenSSL's alert
    except BaseException:  # timed out, or cancelled with the gateway
        tls.abort()
        raise
    return tls


class TLSTransport(asyncio.Transport, asyncio.Protocol):
    """One client's TLS connection: protocol of the TCP transport, transport of ``app``."""

    def __init__(
        self, context: SSL.Context, app: asyncio.Protocol, loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__()
        self._context = context
        self._app: asyncio.Protocol | None = app
        self._loop = loop
        self._raw: asyncio.Transport | None = None
        self._tls: SSL.Connection | None = None
        self._ssl: Any = None  # the connection's SSL*, its BIOs, and the read buffer
        self._into: Any = None
        self._out: Any = None
        self._buffer = _thread_buffer()
        self._peer: crypto.X509 | None = None  # the client's certificate
        self._state = _HANDSHAKE
        self._paused = False
        self._draining: asyncio.Handle | None = None
        #: Done when the handshake is; its exception when it failed.
        self.handshake: asyncio.Future[None] = loop.create_future()

    # ------------------------------------------------------------------ the TCP side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._raw = transport  # type: ignore[assignment]
        self._tls = tls = SSL.Connection(self._context, None)
        tls.set_accept_state()
        self._ssl, self._into, self._out = tls._ssl, tls._into_ssl, tls._from_ssl

    def data_received(self, data: bytes) -> None:
        if self._tls is None or self._state == _CLOSED:
            return
        with _ffi.from_buffer(data) as pointer:
            written = _lib.BIO_write(self._into, pointer, len(data))
        if written != len(data):  # a memory BIO fails only when out of memory
            self._fail(MemoryError("OpenSSL could not take the bytes received"))
            return
        if self._state == _HANDSHAKE:
            self._handshake()
        elif not self._paused:
            self._drain()

    def eof_received(self) -> bool:
        if self._state == _HANDSHAKE:
            self._fail_handshake(HandshakeFailed("the client closed during the handshake"))
            return False
        if not self._paused:
            self._drain()
        self._peer_closed()
        return True  # closing ourselves, after the close_notify

    def connection_lost(self, exc: Exception | None) -> None:
        state, self._state = self._state, _CLOSED
        if state == _HANDSHAKE:
            self._fail_handshake(HandshakeFailed("the connection was lost during the handshake"))
        elif self._tls is not None:
            # The session stays in the cache however the client left (module docstring).
            self._tls.set_shutdown(SSL.SENT_SHUTDOWN | SSL.RECEIVED_SHUTDOWN)
        # OpenSSL's state is freed now, not when the collector finds the protocol (the HTTP
        # protocol and its parser are a reference cycle).
        self._tls = self._ssl = self._into = self._out = None
        if self._draining is not None:
            self._draining.cancel()
            self._draining = None
        app, self._app = self._app, None
        if app is not None and state != _HANDSHAKE:
            app.connection_lost(exc)
        self._raw = None

    def pause_writing(self) -> None:
        if self._app is not None and self._state != _HANDSHAKE:
            self._app.pause_writing()

    def resume_writing(self) -> None:
        if self._app is not None and self._state != _HANDSHAKE:
            self._app.resume_writing()

    # ------------------------------------------------------------------ TLS
    def _handshake(self) -> None:
        tls = self._tls
        if tls is None:
            return
        try:
            tls.do_handshake()
        except SSL.WantReadError:
            self._flush()
            return
        except SSL.Error as exc:
            self._flush()  # the alert, if OpenSSL made one
            self._fail_handshake(HandshakeFailed(_reason(exc) + _verify_detail(tls)))
            if self._raw is not None:
                self._raw.close()
            return
        if self.handshake.done():  # timed out meanwhile
            self.abort()
            return
        self._state = _OPEN
        self._peer = tls.get_peer_certificate()
        self._flush()  # the last flight (TLS 1.3: the session tickets)
        self.handshake.set_result(None)
        if self._app is not None:
            self._app.connection_made(self)
        if not self._paused:
            self._drain()

    def _drain(self) -> None:
        """Hand the plaintext OpenSSL holds to the protocol, until it pauses."""
        self._draining = None
        tls, app = self._tls, self._app
        if tls is None or app is None:
            return
        ssl, buffer = self._ssl, self._buffer
        while not self._paused and self._state == _OPEN:
            read = _lib.SSL_read(ssl, buffer, _CHUNK)
            if read <= 0:
                if _lib.SSL_get_error(ssl, read) == _WANT_READ:
                    break
                try:
                    tls._raise_ssl_error(ssl, read)  # pyOpenSSL's exception for it
                except SSL.ZeroReturnError:  # the client's close_notify
                    self._peer_closed()
                    break
                except SSL.Error as exc:
                    self._fail(exc)
                    return
                break
            app.data_received(_ffi.buffer(buffer, read)[:])
        if self._state != _CLOSED:
            self._flush()  # what reading made (a KeyUpdate answer, an alert)

    def _flush(self) -> None:
        """Write what OpenSSL produced to the TCP transport."""
        raw = self._raw
        if self._tls is None or raw is None:
            return
        out, buffer = self._out, self._buffer
        while True:
            read = _lib.BIO_read(out, buffer, _CHUNK)
            if read <= 0:  # empty
                return
            raw.write(_ffi.buffer(buffer, read)[:])
            if read < _CHUNK:
                return

    def _peer_closed(self) -> None:
        """The client ended its side (close_notify or end of stream): close ours."""
        app = self._app
        if app is not None and self._state == _OPEN:
            app.eof_received()  # TLS has no half-close: whatever it answers, we close
        self.close()

    def _fail(self, exc: Exception) -> None:
        log.debug("TLS error on an open connection: %s", _reason(exc))
        self._flush()
        self.abort()

    def _fail_handshake(self, exc: HandshakeFailed) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(exc)
            self.handshake.exception()  # retrieved: a timed-out waiter no longer looks

    # ------------------------------------------------------------------ the protocol's side
    def write(self, data: bytes | bytearray | memoryview) -> None:
        tls = self._tls
        if self._state != _OPEN or tls is None or not data:
            return
        ssl, size = self._ssl, len(data)
        with _ffi.from_buffer(data) as pointer:
            done = 0
            while done < size:  # all at once, into a memory BIO: one call but in theory
                sent = _lib.SSL_write(ssl, pointer + done, min(size - done, 1 << 30))
                if sent <= 0:
                    try:
                        tls._raise_ssl_error(ssl, sent)
                    except SSL.Error as exc:
                        self._fail(exc)
                    return
                done += sent
        self._flush()

    def close(self) -> None:
        if self._state in (_CLOSING, _CLOSED):
            return
        was, self._state = self._state, _CLOSING
        if was == _OPEN and self._tls is not None:
            try:
                self._tls.shutdown()  # our close_notify; the client's is not waited for
            except SSL.Error:
                pass
            self._flush()
        if self._raw is not None:
            self._raw.close()

    def abort(self) -> None:
        if self._state == _CLOSED:
            return
        if self._state != _HANDSHAKE:
            self._state = _CLOSING
        if self._raw is not None:
            self._raw.abort()

    def is_closing(self) -> bool:
        return self._state != _OPEN

    def pause_reading(self) -> None:
        if not self._paused:
            self._paused = True
            if self._raw is not None and not self._raw.is_closing():
                self._raw.pause_reading()

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            if self._raw is not None and not self._raw.is_closing():
                self._raw.resume_reading()
            if self._draining is None and self._state == _OPEN:
                # Not from inside the caller's own code: records already received first.
                self._draining = self._loop.call_soon(self._drain)

    def is_reading(self) -> bool:
        return not self._paused and self._state == _OPEN

    def get_write_buffer_size(self) -> int:
        return self._raw.get_write_buffer_size() if self._raw is not None else 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        if self._raw is None:
            return (0, 0)
        return self._raw.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._raw is not None:
            self._raw.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("TLS has no half-close")

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._app = protocol  # type: ignore[assignment]

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._app  # type: ignore[return-value]

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._tls
        return self._raw.get_extra_info(name, default) if self._raw is not None else default

    # ------------------------------------------------------------------ the client
    def peer_certificate_der(self) -> bytes | None:
        """The client's certificate (DER), None without one."""
        if self._peer is None:
            return None
        return crypto.dump_certificate(crypto.FILETYPE_ASN1, self._peer)

    def sent_chain(self, leaf: bytes) -> list[x509.Certificate]:
        """The certificates the client sent besides its leaf ``leaf`` (DER); none once the
        connection is closed.
        """
        chain = self._tls.get_peer_cert_chain(as_cryptography=True) if self._tls else None
        return [c for c in chain or () if c.public_bytes(Encoding.DER) != leaf]


#: X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT (2) and ..._LOCALLY (20).
_ISSUER_MISSING = frozenset((2, 20))


def _verify_detail(tls: SSL.Connection) -> str:
    """Why the client's chain did not verify, for the refusal's log line: ``certificate
    verify failed`` alone does not say that the client sent its leaf without its issuing CA.
    (OpenSSL keeps no certificate of a chain that failed, so the issuer is not named here.)
    """
    code = _lib.SSL_get_verify_result(tls._ssl)  # no public call for it in pyOpenSSL
    if code == _lib.X509_V_OK:
        return ""
    text = bytes(_ffi.string(_lib.X509_verify_cert_error_string(code)))
    detail = ": " + text.decode("ascii", "replace")
    if code in _ISSUER_MISSING:
        detail += (
            " (the client did not send its issuing CA and the ca_roots files do not hold it:"
            " add the issuing CA to them, or have the client send its chain)"
        )
    return detail


def _reason(exc: Exception) -> str:
    """OpenSSL's reason for ``exc`` (the last of its error queue), else its class name."""
    details = exc.args[0] if exc.args else None
    if isinstance(details, list) and details and isinstance(details[-1], tuple):
        return str(details[-1][-1]) or type(exc).__name__
    if isinstance(exc, SSL.SysCallError) and exc.args:
        return str(exc.args[-1])
    return type(exc).__name__


__all__ = ["HandshakeFailed", "TLSTransport", "accept_tls"]
