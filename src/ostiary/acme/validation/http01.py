"""http-01 (RFC 8555 section 8.3): the key authorization at a well-known HTTP path.

The CA fetches ``http://<identifier>:<port>/.well-known/acme-challenge/<token>`` (port 80 in
production, :attr:`ValidationSettings.http_port` for tests; an IPv6 identifier in brackets,
RFC 8738 section 7), follows at most :attr:`~ValidationSettings.max_redirects` redirects, to
``http`` and ``https`` URLs only, reads at most :attr:`~ValidationSettings.max_body_bytes`
and compares the body, trailing whitespace trimmed, with the key authorization. A redirect
to ``https`` is followed without checking the server's certificate, as section 8.3 allows:
what proves control is the body, not the transport.

With a configured resolver (``ca serve --acme-dns-resolver``) the name of each URL, the
first and every redirect's, is looked up there (:func:`resolve_addresses`) and the request
goes to that address with the name as ``Host`` (and as SNI after a redirect to ``https``);
without one, the system resolves it.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import weakref

import httpx

from ostiary.acme.validation.base import (
    ChallengeContext,
    ChallengeFailed,
    ValidationResult,
    ValidationSettings,
)
from ostiary.acme.validation.resolver import resolve_addresses

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


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
    client = _client()
    for _ in range(settings.max_redirects + 1):
        body, location = await _fetch(client, url, settings)
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

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def _client() -> httpx.AsyncClient:
    """The event loop's one client for http-01: made once, not per validation (its TLS
    context, for a redirect to ``https``, costs more than a fetch). No connection is kept
    alive between fetches, so every validation opens its own, to the address it resolves.
    """
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = _clients[loop] = httpx.AsyncClient(
            follow_redirects=False,
            verify=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=0),
        )
    return client


async def _request(url: str, settings: ValidationSettings) -> httpx.Request:
    """The GET for ``url``: to the address the configured resolver gives for its name."""
    target = httpx.URL(url)
    timeout = {"timeout": httpx.Timeout(settings.timeout).as_dict()}
    if settings.dns_resolver is None or _is_address(target.host):
        return httpx.Request("GET", target, extensions=timeout)
    address = (await resolve_addresses(target.host, settings))[0]
    return httpx.Request(
        "GET",
        target.copy_with(host=address),
        headers={"Host": target.netloc.decode("ascii")},
        extensions={"sni_hostname": target.host, **timeout},
    )


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _fetch(
    client: httpx.AsyncClient, url: str, settings: ValidationSettings
) -> tuple[bytes, str | None]:
    """The body of ``url`` (at most ``settings.max_body_bytes``), or the next URL of a
    redirect (resolved against ``url``, the name and not the address it was fetched from).
    """
    limit = settings.max_body_bytes
    request = await _request(url, settings)
    try:
        response = await client.send(request, stream=True)
        try:
            if response.status_code in _REDIRECTS:
                return b"", _next_url(response, url)
            if response.status_code != 200:
                raise ChallengeFailed(
                    "unauthorized", f"{url} answered HTTP {response.status_code}, not 200"
                )
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > limit:
                    raise ChallengeFailed(
                        "unauthorized", f"the body at {url} is longer than {limit} bytes"
                    )
            return bytes(body), None
        finally:
            await response.aclose()
    except httpx.TimeoutException:
        raise ChallengeFailed("connection", f"{url} did not answer in time") from None
    except (httpx.HTTPError, OSError) as exc:
        raise ChallengeFailed("connection", f"cannot fetch {url}: {type(exc).__name__}") from None


def _next_url(response: httpx.Response, url: str) -> str:
    location = response.headers.get("location")
    if not location:
        raise ChallengeFailed("connection", f"{url} redirects without a Location")
    try:
        target = httpx.URL(url).join(location)
    except httpx.InvalidURL:
        raise ChallengeFailed("connection", f"{url} redirects to an invalid URL") from None
    if target.scheme not in ("http", "https"):
        raise ChallengeFailed(
            "connection", f"{url} redirects to a {target.scheme} URL: http(s) only"
        )
    return str(target)


__all__ = ["challenge_url", "validate_http01"]
