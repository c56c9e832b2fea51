"""http-01 (RFC 8555 section 8.3): the key authorization at a well-known HTTP path.

The CA fetches ``http://<identifier>:<port>/.well-known/acme-challenge/<token>`` (port 80 in
production, :attr:`ValidationSettings.http_port` for tests; an IPv6 identifier in brackets,
RFC 8738 section 7), follows at most :attr:`~ValidationSettings.max_redirects` redirects, to
``http`` and ``https`` URLs only, reads at most :attr:`~ValidationSettings.max_body_bytes`
and compares the body, trailing whitespace trimmed, with the key authorization. A redirect
to ``https`` is followed without checking the server's certificate, as section 8.3 allows:
what proves control is the body, not the transport.
"""

from __future__ import annotations

import hmac
import ipaddress

import httpx

from ostiary.acme.validation.base import (
    ChallengeContext,
    ChallengeFailed,
    ValidationResult,
    ValidationSettings,
)

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
    timeout = httpx.Timeout(settings.timeout)
    async with httpx.AsyncClient(
        timeout=timeout, follow_redirects=False, verify=False, trust_env=False
    ) as client:
        for _ in range(settings.max_redirects + 1):
            body, location = await _fetch(client, url, settings.max_body_bytes)
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


async def _fetch(client: httpx.AsyncClient, url: str, limit: int) -> tuple[bytes, str | None]:
    """The body of ``url`` (at most ``limit`` bytes), or the next URL of a redirect."""
    try:
        async with client.stream("GET", url) as response:
            if response.status_code in _REDIRECTS:
                return b"", _next_url(response)
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
    except httpx.TimeoutException:
        raise ChallengeFailed("connection", f"{url} did not answer in time") from None
    except (httpx.HTTPError, OSError) as exc:
        raise ChallengeFailed("connection", f"cannot fetch {url}: {type(exc).__name__}") from None


def _next_url(response: httpx.Response) -> str:
    location = response.headers.get("location")
    if not location:
        raise ChallengeFailed("connection", f"{response.url} redirects without a Location")
    try:
        target = response.url.join(location)
    except httpx.InvalidURL:
        raise ChallengeFailed("connection", f"{response.url} redirects to an invalid URL") from None
    if target.scheme not in ("http", "https"):
        raise ChallengeFailed(
            "connection", f"{response.url} redirects to a {target.scheme} URL: http(s) only"
        )
    return str(target)


__all__ = ["challenge_url", "validate_http01"]
