"""http-01 (RFC 8555 section 8.3): the key authorization at a well-known HTTP path.

The CA fetches ``http://<identifier>:<port>/.well-known/acme-challenge/<token>`` (port 80 in
production, :attr:`ValidationSettings.http_port` for tests; an IPv6 identifier in brackets,
RFC 8738 section 7), follows at most :attr:`~ValidationSettings.max_redirects` redirects, to
``http`` and ``https`` URLs only, reads at most :attr:`~ValidationSettings.max_body_bytes`
and compares the body, trailing whitespace trimmed, with the key authorization. Each fetch,
from the connection to the last byte, has :attr:`~ValidationSettings.timeout` seconds. A
redirect to ``https`` is followed without checking the server's certificate, as section 8.3
allows: what proves control is the body, not the transport.

With a configured resolver (``ca serve --acme-dns-resolver``) the name of each URL, the
first and every redirect's, is looked up there (:func:`resolve_addresses`) and the request
goes to that address with the name as ``Host`` (and as SNI after a redirect to ``https``);
without one, the system resolves it.

One fetch is one GET on a connection of its own, over asyncio streams, with h11 (the
HTTP/1.1 state machine httpx itself runs on) writing the request and parsing the answer.
Through httpx's client the same fetch cost about a sixth of the server's CPU per ACME order
(its transport layers, anyio, and an import attempt per request; docs/BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import ipaddress
import ssl
import weakref
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

import h11

from ostiary.acme.validation.base import (
    ChallengeContext,
    ChallengeFailed,
    ValidationResult,
    ValidationSettings,
)
from ostiary.acme.validation.resolver import resolve_addresses
from ostiary.tls import unverified_client_context

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: What a request target keeps as it is; anything else is percent-encoded.
_TARGET_SAFE = "/%!$&'()*+,;=:@~?"
#: Bytes read from a connection at a time.
_CHUNK = 16 * 1024


def challenge_url(context: ChallengeContext, settings: ValidationSettings) -> str:
    host = context.identifier_value
    if context.identifier_type == "ip" and ipaddress.ip_address(host).version == 6:
        host = f"[{host}]"
    return f"http://{host}:{settings.http_port}/.well-known/acme-challenge/{context.token}"


async def validate_http01(
    context: ChallengeContext, settings: ValidationSettings
) -> ValidationResult:
    """Fetch the key authorization; :class:`ChallengeFailed` unless it is exactly there."""
    if context.identifier_type not in ("dns", "ip") or context.identifier_value.startswith("*."):
        raise ChallengeFailed("malformed", "http-01 proves DNS names and IP addresses only")
    url = challenge_url(context, settings)
    for _ in range(settings.max_redirects + 1):
        body, location = await _fetch(url, settings)
        if location is None:
            break
        url = location
    else:
        raise ChallengeFailed(
            "connection", f"more than {settings.max_redirects} redirects from {url}"
        )
    answer = body.rstrip(b" \t\r\n")
    if not hmac.compare_digest(answer, context.key_authorization.encode("ascii")):
        raise ChallengeFailed(
            "incorrectResponse", f"the body at {url} is not this challenge's key authorization"
        )
    return ValidationResult()


#: Connections the validations of one process may have open at once (more wait their turn).
MAX_CONNECTIONS = 64

_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _connection_slot() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    slot = _slots.get(loop)
    if slot is None:
        slot = _slots[loop] = asyncio.Semaphore(MAX_CONNECTIONS)
    return slot


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Made once, not per validation: a context costs more than a fetch."""
    return unverified_client_context()


@dataclass(frozen=True, slots=True)
class _Target:
    """Where a URL's GET goes, and what it says."""

    scheme: str
    host: str  # the name or address in the URL, without brackets
    port: int
    authority: str  # the Host header
    path: str  # the request target: path and query, percent-encoded

    @classmethod
    def of(cls, url: str) -> _Target:
        """Raises ``ValueError`` for a URL that is not an absolute http(s) URL with a host."""
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port  # .port raises ValueError when not a number
        if parts.scheme not in _DEFAULT_PORTS or not host or not host.isascii():
            raise ValueError(url)
        default = _DEFAULT_PORTS[parts.scheme]
        named = f"[{host}]" if ":" in host else host
        authority = named if port is None or port == default else f"{named}:{port}"
        path = quote(parts.path or "/", safe=_TARGET_SAFE)
        if parts.query:
            path += "?" + quote(parts.query, safe=_TARGET_SAFE)
        return cls(parts.scheme, host, default if port is None else port, authority, path)


async def _fetch(url: str, settings: ValidationSettings) -> tuple[bytes, str | None]:
    """The body of ``url`` (at most ``settings.max_body_bytes``), or the next URL of a
    redirect (resolved against ``url``, the name and not the address it was fetched from).
    """
    target = _Target.of(url)
    address = target.host
    if settings.dns_resolver is not None and not _is_address(target.host):
        address = (await resolve_addresses(target.host, settings))[0]
    try:
        async with asyncio.timeout(settings.timeout), _connection_slot():
            reader, writer = await asyncio.open_connection(
                address,
                target.port,
                ssl=_tls_context() if target.scheme == "https" else None,
                server_hostname=target.host if target.scheme == "https" else None,
            )
            try:
                return await _get(reader, writer, target, url, settings.max_body_bytes)
            finally:
                writer.close()
    except TimeoutError:
        raise ChallengeFailed("connection", f"{url} did not answer in time") from None
    except (h11.ProtocolError, OSError) as exc:
        raise ChallengeFailed("connection", f"cannot fetch {url}: {type(exc).__name__}") from None


async def _get(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    target: _Target,
    url: str,
    limit: int,
) -> tuple[bytes, str | None]:
    connection = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="GET",
        target=target.path,
        headers=[
            ("Host", target.authority),
            ("User-Agent", "ostiary-acme-validation"),
            ("Accept", "*/*"),
            ("Connection", "close"),
        ],
    )
    writer.write(connection.send(request) + (connection.send(h11.EndOfMessage()) or b""))
    body = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(await reader.read(_CHUNK))
        elif isinstance(event, h11.Response):
            if event.status_code in _REDIRECTS:
                return b"", _next_url(event, url)
            if event.status_code != 200:
                raise ChallengeFailed(
                    "unauthorized", f"{url} answered HTTP {event.status_code}, not 200"
                )
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > limit:
                raise ChallengeFailed(
                    "unauthorized", f"the body at {url} is longer than {limit} bytes"
                )
        elif isinstance(event, h11.EndOfMessage):
            return bytes(body), None
        # an informational (1xx) answer: the final one follows


def _next_url(response: h11.Response, url: str) -> str:
    location = next((v for k, v in response.headers if k == b"location"), b"")
    if not location:
        raise ChallengeFailed("connection", f"{url} redirects without a Location")
    joined = urljoin(url, location.decode("latin-1").strip())
    scheme = urlsplit(joined).scheme
    if scheme not in ("http", "https"):
        raise ChallengeFailed("connection", f"{url} redirects to a {scheme} URL: http(s) only")
    try:
        _Target.of(joined)
    except ValueError:
        raise ChallengeFailed("connection", f"{url} redirects to an invalid URL") from None
    return joined


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


__all__ = ["challenge_url", "validate_http01"]
