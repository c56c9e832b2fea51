"""Client assertions signed by the CA: the key stays there, the application gets JWTs.

:class:`RemoteAssertion` is a callable returning a fresh RFC 7523 client assertion for one
signing key, audience and client id, cached until shortly before it expires. It fits
MSAL's ``client_credential={"client_assertion": callable}`` and any OAuth library that takes
a ``private_key_jwt`` assertion::

    assertion = RemoteAssertion.from_config(
        key="billing", client_id=APP_ID, tenant=TENANT, identity=workload_identity
    )
    app = msal.ConfidentialClientApplication(
        APP_ID, authority=f"https://login.microsoftonline.com/{TENANT}",
        client_credential={"client_assertion": assertion},
    )

The caller proves who it is with its own client certificate (``identity``: mTLS) or an
admin-issued ``token``. :meth:`RemoteAssertion.sign_digest` gives a bare JWS signature.
"""

from __future__ import annotations

import base64
import ssl
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Self
from urllib.parse import quote

import httpx
from cryptography import x509

from ostiary.client._closing import ClosingClient
from ostiary.client.config import ClientConfig, load_client_config, normalize_ca_url
from ostiary.client.errors import CAUnavailable, error_from_problem
from ostiary.core.errors import BadRequest, InvalidCertificate, MalformedInput
from ostiary.tls import TLSIdentity, client_context

#: A cached assertion is replaced this long before its ``exp``.
REFRESH_MARGIN = timedelta(seconds=60)
#: Lifetime asked for by default (the server grants at most 600 s).
DEFAULT_LIFETIME = timedelta(minutes=5)

Clock = Callable[[], datetime]


def entra_token_endpoint(tenant: str) -> str:
    """Microsoft Entra ID's v2 token endpoint for ``tenant`` (the assertion's ``aud``)."""
    if not tenant or any(c in tenant for c in "/?#% ") or len(tenant) > 128:
        raise BadRequest("a tenant is a tenant id (GUID) or a domain name")
    return f"https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class RemoteAssertion(ClosingClient):
    """Fresh client assertions from the CA for one key, client id and audience."""

    def __init__(
        self,
        ca_url: str,
        roots: list[x509.Certificate],
        *,
        key: str,
        client_id: str,
        audience: str,
        identity: TLSIdentity | None = None,
        token: str | None = None,
        lifetime: timedelta = DEFAULT_LIFETIME,
        alg: str | None = None,
        clock: Clock = _utc_now,
        timeout: float = 30.0,
    ) -> None:
        if (identity is None) == (token is None):
            raise BadRequest("give either a client certificate (identity) or a token")
        self.ca_url = normalize_ca_url(ca_url)
        self.key = key
        self.client_id = client_id
        self.audience = audience
        self.lifetime = lifetime
        self.alg = alg
        self._clock = clock
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        context = client_context(roots, identity=identity)
        self._http = httpx.Client(
            base_url=self.ca_url, verify=context, timeout=timeout, trust_env=False
        )
        self._lock = threading.Lock()
        self._cached: tuple[str, datetime] | None = None

    @classmethod
    def from_config(
        cls,
        *,
        config: ClientConfig | None = None,
        tenant: str | None = None,
        audience: str | None = None,
        **options: Any,
    ) -> Self:
        """For the CA saved by ``ostiary bootstrap``; ``tenant`` sets Entra's audience."""
        config = config or load_client_config()
        if audience is None:
            if tenant is None:
                raise BadRequest("give an audience or an Entra tenant")
            audience = entra_token_endpoint(tenant)
        return cls(config.ca_url, [config.root], audience=audience, **options)

    def __call__(self) -> str:
        """A client assertion valid for at least :data:`REFRESH_MARGIN` more."""
        with self._lock:
            now = self._clock()
            if self._cached is not None and self._cached[1] - REFRESH_MARGIN > now:
                return self._cached[0]
            body: dict[str, Any] = {
                "client_id": self.client_id,
                "audience": self.audience,
                "lifetime": int(self.lifetime.total_seconds()),
            }
            if self.alg:
                body["alg"] = self.alg
            answer = self._call(f"/signing/keys/{quote(self.key, safe='')}/assertion", body)
            assertion, expires_at = answer.get("assertion"), answer.get("expires_at")
            if not isinstance(assertion, str) or not isinstance(expires_at, int):
                raise MalformedInput("the CA's assertion answer is not valid")
            self._cached = (assertion, datetime.fromtimestamp(expires_at, UTC))
            return assertion

    def sign_digest(self, alg: str, digest: bytes) -> tuple[str, bytes]:
        """``(kid, signature)`` for a digest the caller computed (JWS signature value)."""
        answer = self._call(
            f"/signing/keys/{quote(self.key, safe='')}/sign",
            {"alg": alg, "digest": base64.urlsafe_b64encode(digest).rstrip(b"=").decode()},
        )
        kid, signature = answer.get("kid"), answer.get("signature")
        if not isinstance(kid, str) or not isinstance(signature, str):
            raise MalformedInput("the CA's signature answer is not valid")
        return kid, base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))

    def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self._http.post(path, json=body, headers=self._headers)
        except httpx.TransportError as exc:
            if _verify_failed(exc):
                raise InvalidCertificate(
                    f"the server at {self.ca_url} is not trusted: not our CA's certificate"
                ) from None
            raise CAUnavailable(f"cannot reach the CA at {self.ca_url}") from None
        try:
            document = response.json()
        except ValueError:
            document = None
        if response.is_error:
            raise error_from_problem(response.status_code, document)
        if not isinstance(document, dict):
            raise CAUnavailable(f"the CA at {self.ca_url} did not answer with JSON")
        return document


def _verify_failed(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


__all__ = ["DEFAULT_LIFETIME", "REFRESH_MARGIN", "RemoteAssertion", "entra_token_endpoint"]
