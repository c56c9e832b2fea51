"""One HTTP exchange through the gateway: the request's state, and how its answer is framed.

An :class:`Exchange` lives from the request's head to the last byte of its answer; the
access log reports its first five fields. :func:`response_head` turns the upstream's parsed
response head into the bytes the client gets: hop-by-hop headers dropped (``Connection``,
``Keep-Alive``, ``Proxy-Connection``, ``Transfer-Encoding``), and the way the body is written
chosen (:data:`BODY_NONE`, :data:`BODY_RAW` as received, or :data:`BODY_CHUNKED` re-chunked
when the sender chunked it or the response has no length); an HTTP/1.0 client without a
length gets the body until the close.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# How a response body is written to the client.
BODY_NONE, BODY_RAW, BODY_CHUNKED = 0, 1, 2

_DROP_RESPONSE = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding"}
)


@dataclass(eq=False, slots=True)
class Exchange:
    """One request and its answer; the access log reports the first five fields."""

    method: str
    target: str
    status: int = 0
    sent: int = 0
    refusal: str = ""  # why the request is refused: a route (403) or its target (400)
    refusal_status: int = 403
    refusal_detail: str = ""
    started: float = 0.0
    head: bytes = b""
    chunked: bool = False  # the request body is chunked (and re-chunked upstream)
    pending: list[bytes] = field(default_factory=list)
    pending_size: int = 0
    request_done: bool = False
    upgrade: bool = False
    head_request: bool = False
    http10: bool = False
    keep_alive: bool = True
    body_mode: int = BODY_NONE
    answered: bool = False  # a final response head went to the client
    close_after: bool = False
    until_close: bool = False  # the response body ends when the upstream closes
    retried: bool = False


def response_head(
    exchange: Exchange, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
) -> bytes:
    """The response head for the client; a final one also sets how ``exchange`` goes on
    (status, body mode, whether the connection closes after it).

    An interim response (``100 Continue``, ``103 Early Hints``) and a ``101`` are passed on
    as they came.
    """
    if status < 200 and status != 101:  # 100 Continue, 103 Early Hints: passed on
        interim = [b"HTTP/1.1 %d %b\r\n" % (status, reason)]
        interim += [name + b": " + value + b"\r\n" for name, value in headers]
        return b"".join(interim) + b"\r\n"
    exchange.status = status
    exchange.answered = True
    parts = [b"HTTP/1.1 %d %b\r\n" % (status, reason)]
    if status == 101:
        parts += [name + b": " + value + b"\r\n" for name, value in headers]
        return b"".join(parts) + b"\r\n"
    has_length = chunked = False
    for name, value in headers:
        low = name.lower()
        if low in _DROP_RESPONSE:
            chunked = chunked or low == b"transfer-encoding"
            continue
        has_length = has_length or low == b"content-length"
        parts += (name, b": ", value, b"\r\n")
    if exchange.head_request or status in (204, 304):
        exchange.body_mode = BODY_NONE
    elif has_length and not chunked:
        exchange.body_mode = BODY_RAW
    elif exchange.http10:  # no chunked encoding in HTTP/1.0: the end is the close
        exchange.body_mode = BODY_RAW
        exchange.until_close = not chunked
        exchange.close_after = True
    else:
        exchange.body_mode = BODY_CHUNKED
        exchange.until_close = not chunked
        parts.append(b"transfer-encoding: chunked\r\n")
    if exchange.upgrade:  # asked to switch, but the upstream did not
        exchange.close_after = True
    if not exchange.keep_alive or exchange.close_after:
        exchange.close_after = True
        parts.append(b"connection: close\r\n")
    elif exchange.http10:
        parts.append(b"connection: keep-alive\r\n")
    return b"".join(parts) + b"\r\n"


__all__ = ["BODY_CHUNKED", "BODY_NONE", "BODY_RAW", "Exchange", "response_head"]
