"""An OpenID provider's metadata and signing keys, fetched over HTTPS and cached.

OpenID Connect Discovery 1.0: the configuration endpoint
(``<issuer>/.well-known/openid-configuration``) names the ``issuer``, the authorization and
token endpoints and the ``jwks_uri``; the issuer it states must be the URL it was fetched
from minus the well-known suffix (section 4.3), so a document served elsewhere cannot claim
another issuer. Keys (RFC 7517 JWK Set) are cached for :data:`KEYS_TTL` and fetched again when
an ID token names a ``kid`` the cache does not know (the provider rotated its keys), at most
once per :data:`REFETCH_INTERVAL`, so a stream of tokens with made-up ``kid`` values cannot
make the CA hammer the provider.

The provider is not our CA: HTTPS is verified against the system trust store or a CA file
given for the provisioner (:func:`ostiary.tls.web_client_context`). Plain ``http://`` is
accepted only for loopback hosts (a provider on the same machine, as in the tests).
Every failure is :class:`~ostiary.core.errors.Unavailable` (the provider cannot be reached or
answers garbage: try again later) or :class:`~ostiary.core.errors.BadRequest` (a URL that can
never work). :func:`check_discovery` is the check made when a provisioner is added: there,
every failure is the admin's to fix, a BadRequest.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from joserfc import jwk
from joserfc.errors import JoseError

from ostiary.core.errors import BadRequest, Unauthorized, Unavailable
from ostiary.tls import web_client_context

WELL_KNOWN = "/.well-known/openid-configuration"
#: How long discovery documents and key sets are trusted before they are fetched again.
KEYS_TTL = 3600.0
#: The shortest time between two fetches of a key set prompted by an unknown ``kid``.
REFETCH_INTERVAL = 10.0
#: Longest provider answer read.
MAX_DOCUMENT = 256 * 1024
#: Signature algorithms an ID token may use (never ``none``, never an HMAC).
SIGNATURE_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384")
_LOOPBACK_NAMES = frozenset({"localhost"})

Clock = Callable[[], float]


def check_provider_url(url: str, *, what: str = "the configuration endpoint") -> str:
    """``url`` if it is ``https://``, or ``http://`` on a loopback host; else BadRequest."""
    parts = urlsplit(url.strip())
    if parts.scheme == "https" and parts.hostname:
        return url.strip()
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return url.strip()
    raise BadRequest(
        f"{what} must be an https:// URL (http:// only on a loopback address): {url[:200]!r}"
    )


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ProviderMetadata:
    """What the CA and its clients need from a discovery document."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    algorithms: tuple[str, ...]

    @classmethod
    def from_document(
        cls, document: Mapping[str, Any], *, configuration_url: str
    ) -> ProviderMetadata:
        def field(name: str) -> str:
            value = document.get(name)
            if not isinstance(value, str) or not value:
                raise Unavailable(f"the provider's discovery document has no {name!r}")
            return check_provider_url(value, what=f"the provider's {name}")

        issuer = document.get("issuer")
        expected = configuration_url.removesuffix(WELL_KNOWN)
        if not isinstance(issuer, str) or issuer.rstrip("/") != expected.rstrip("/"):
            raise Unavailable(
                f"the provider's discovery document names issuer {str(issuer)[:200]!r}, "
                f"not {expected!r} (OpenID Connect Discovery 4.3)"
            )
        offered = document.get("id_token_signing_alg_values_supported", ["RS256"])
        if not isinstance(offered, list):
            offered = ["RS256"]
        algorithms = tuple(a for a in SIGNATURE_ALGORITHMS if a in offered)
        if not algorithms:
            raise Unavailable("the provider signs ID tokens with no algorithm we accept")
        return cls(
            issuer=issuer,
            authorization_endpoint=field("authorization_endpoint"),
            token_endpoint=field("token_endpoint"),
            jwks_uri=field("jwks_uri"),
            algorithms=algorithms,
        )


@dataclass
class _Entry:
    value: Any
    fetched_at: float


class ProviderDirectory:
    """Fetches and caches discovery documents and key sets, per URL; thread-safe.

    ``ca_file`` per call: the PEM roots that verify that provider (None: the system store).
    One directory serves a whole server process (:data:`default_directory`); tests make their
    own with a fake clock.
    """

    def __init__(self, *, clock: Clock = time.monotonic, timeout: float = 10.0) -> None:
        self._clock = clock
        self._timeout = timeout
        self._lock = threading.Lock()
        self._metadata: dict[str, _Entry] = {}
        self._keys: dict[str, _Entry] = {}

    def metadata(self, configuration_url: str, *, ca_file: Path | None = None) -> ProviderMetadata:
        """The provider's metadata, from cache when fresh."""
        url = check_provider_url(configuration_url)
        with self._lock:
            entry = self._metadata.get(url)
            if entry is not None and self._clock() - entry.fetched_at < KEYS_TTL:
                cached: ProviderMetadata = entry.value
                return cached
        document = self._get_json(url, ca_file=ca_file)
        metadata = ProviderMetadata.from_document(document, configuration_url=url)
        with self._lock:
            self._metadata[url] = _Entry(metadata, self._clock())
        return metadata

    def key_for(
        self, metadata: ProviderMetadata, kid: str | None, *, ca_file: Path | None = None
    ) -> jwk.Key:
        """The provider's signing key named ``kid`` (without a ``kid``: its only key).

        An unknown ``kid`` fetches the key set again (rate limited); still unknown is
        :class:`Unauthorized`: the token was not signed by this provider.
        """
        keys = self._cached_keys(metadata.jwks_uri)
        if keys is None:
            keys = self._fetch_keys(metadata.jwks_uri, ca_file=ca_file)
        key = _pick(keys, kid)
        if key is None and self._may_refetch(metadata.jwks_uri):
            key = _pick(self._fetch_keys(metadata.jwks_uri, ca_file=ca_file), kid)
        if key is None:
            if kid is None:
                raise Unauthorized(
                    "the ID token names no key ('kid') and the provider has more than one"
                )
            raise Unauthorized("the ID token was signed with a key the provider does not publish")
        return key

    def _cached_keys(self, url: str) -> list[jwk.Key] | None:
        with self._lock:
            entry = self._keys.get(url)
            if entry is not None and self._clock() - entry.fetched_at < KEYS_TTL:
                keys: list[jwk.Key] = entry.value
                return keys
        return None

    def _may_refetch(self, url: str) -> bool:
        with self._lock:
            entry = self._keys.get(url)
            return entry is None or self._clock() - entry.fetched_at >= REFETCH_INTERVAL

    def _fetch_keys(self, url: str, *, ca_file: Path | None) -> list[jwk.Key]:
        document = self._get_json(url, ca_file=ca_file)
        found = document.get("keys")
        if not isinstance(found, list):
            raise Unavailable("the provider's key set (jwks_uri) has no 'keys' list")
        keys: list[jwk.Key] = []
        for item in found:
            if not isinstance(item, dict) or item.get("use", "sig") != "sig":
                continue
            if item.get("kty") not in ("RSA", "EC"):
                continue
            try:
                keys.append(jwk.import_key({k: v for k, v in item.items() if k != "d"}))
            except (JoseError, ValueError, TypeError):
                continue
        with self._lock:
            self._keys[url] = _Entry(keys, self._clock())
        return keys

    def _get_json(self, url: str, *, ca_file: Path | None) -> dict[str, Any]:
        verify: Any = True
        if url.startswith("https://"):
            verify = web_client_context(ca_file)
        try:
            with httpx.Client(verify=verify, timeout=self._timeout, trust_env=False) as http:
                response = http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"the OpenID provider cannot be reached at {url[:200]}: {type(exc).__name__}"
            ) from None
        if response.status_code != 200:
            raise Unavailable(
                f"the OpenID provider answered {response.status_code} for {url[:200]}"
            )
        if len(response.content) > MAX_DOCUMENT:
            raise Unavailable(f"the OpenID provider's answer from {url[:200]} is too large")
        try:
            document = response.json()
        except ValueError:
            raise Unavailable(
                f"the OpenID provider's answer from {url[:200]} is not JSON"
            ) from None
        if not isinstance(document, dict):
            raise Unavailable(f"the OpenID provider's answer from {url[:200]} is not an object")
        return document


def _pick(keys: list[jwk.Key], kid: str | None) -> jwk.Key | None:
    if kid is None:
        return keys[0] if len(keys) == 1 else None
    for key in keys:
        if key.kid == kid:
            return key
    return None


def check_discovery(
    configuration_url: str, *, ca_file: Path | None = None, timeout: float = 10.0
) -> ProviderMetadata:
    """Fetch and check a discovery document now (no cache): when a provisioner is added or
    pointed at another provider, so that a mistyped URL, a provider that cannot be reached or
    a document naming another issuer (Entra's ``common`` endpoint) is refused at once, not at
    the first sign-in. :class:`BadRequest` with the reason, in one line.
    """
    try:
        return ProviderDirectory(timeout=timeout).metadata(configuration_url, ca_file=ca_file)
    except Unavailable as exc:
        raise BadRequest(
            f"{exc.detail}: check --configuration-endpoint (the tenant-specific one for Entra "
            "ID), or add it while the provider is offline with --no-check"
        ) from None


#: The directory of the server process.
default_directory = ProviderDirectory()
