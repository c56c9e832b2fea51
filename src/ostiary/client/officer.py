"""An officer's calls to the CA server: list, approve and reject requests, over mTLS.

The officer proves who they are with their own certificate and key in the TLS handshake
(the certificate the CA owner bound with ``ostiary ca officer add NAME --cert CRT``); no CA
key and no CA password are involved. The server decides and audits every action as
``officer:<name>``. See docs/console.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from ostiary.client._closing import ClosingClient
from ostiary.client.config import normalize_ca_url
from ostiary.client.errors import CAUnavailable, error_from_problem
from ostiary.core.errors import BadRequest
from ostiary.tls import TLSIdentity, client_context


class OfficerClient(ClosingClient):
    """The CA at ``ca_url`` (trusted through ``roots``), reached as the officer of ``chain``."""

    def __init__(
        self,
        ca_url: str,
        roots: Sequence[x509.Certificate],
        chain: Sequence[x509.Certificate],
        private_key: CertificateIssuerPrivateKeyTypes,
        *,
        timeout: float = 30.0,
    ) -> None:
        if not roots:
            raise BadRequest("no trusted root: run 'ostiary bootstrap' or give --root")
        self.ca_url = normalize_ca_url(ca_url)
        identity = TLSIdentity(tuple(chain), private_key)
        self._http = httpx.Client(
            base_url=self.ca_url,
            verify=client_context(roots, identity=identity),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            trust_env=False,
        )

    def pending(self) -> list[dict[str, Any]]:
        """The waiting requests, oldest first, each with ``warnings`` (names it shares)."""
        body = self._call("GET", "/requests")
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list):
            raise CAUnavailable(f"the CA at {self.ca_url} answered /requests without a list")
        return [r for r in requests if isinstance(r, dict)]

    def approve(self, request_id: str, code: str | None) -> dict[str, Any]:
        """Approve (``request_id`` may be a unique prefix); the issued serial and the full id."""
        path = f"/requests/{quote(request_id, safe='')}/approve"
        answer: dict[str, Any] = self._call("POST", path, json={"code": code})
        return answer

    def reject(self, request_id: str, reason: str) -> dict[str, Any]:
        path = f"/requests/{quote(request_id, safe='')}/reject"
        answer: dict[str, Any] = self._call("POST", path, json={"reason": reason})
        return answer

    def reject_all(
        self, reason: str, *, provisioner: str | None, submitted_before: datetime | None
    ) -> list[str]:
        """Reject every waiting request matching the filters; the ids rejected."""
        body = {
            "reason": reason,
            "provisioner": provisioner,
            "submitted_before": submitted_before.isoformat() if submitted_before else None,
        }
        answer = self._call("POST", "/requests/reject", json=body)
        rejected = answer.get("rejected") if isinstance(answer, dict) else None
        if not isinstance(rejected, list):
            raise CAUnavailable(f"the CA at {self.ca_url} answered without the rejected ids")
        return [str(r) for r in rejected]

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        from ostiary.client.api import transport_error

        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise transport_error(self.ca_url, exc) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_error:
            raise error_from_problem(response.status_code, body)
        if body is None:
            raise CAUnavailable(f"the CA at {self.ca_url} answered {path} with something else")
        return body


__all__ = ["OfficerClient"]
