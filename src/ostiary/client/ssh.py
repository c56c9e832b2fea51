"""The CA's SSH endpoints (docs/ssh.md), over the client's verified HTTPS connection."""

from __future__ import annotations

from typing import Any

import httpx

from ostiary.client.api import OstiaryClient, _transport_error
from ostiary.client.errors import error_from_problem


class SSHClient(OstiaryClient):
    """:class:`OstiaryClient` plus ``/ssh/...``."""

    def ssh_certificate(
        self,
        public_key: str,
        token: str,
        *,
        cert_type: str | None = None,
        lifetime: str | None = None,
    ) -> dict[str, Any]:
        """``POST /ssh/certificate``: ``certificate`` (the line), ``serial``, ``not_after``."""
        body: dict[str, Any] = {"public_key": public_key, "token": token}
        if cert_type is not None:
            body["type"] = cert_type
        if lifetime is not None:
            body["lifetime"] = lifetime
        answer: dict[str, Any] = self._call(self._http, "POST", "/ssh/certificate", json=body)
        return answer

    def ssh_ca(self) -> dict[str, Any]:
        answer: dict[str, Any] = self._call(self._http, "GET", "/ssh/ca")
        return answer

    def ssh_status(self, cert_type: str, serial: int) -> dict[str, Any]:
        answer: dict[str, Any] = self._call(self._http, "GET", f"/ssh/status/{cert_type}/{serial}")
        return answer

    def ssh_krl(self) -> bytes:
        """``GET /ssh/krl``: the KRL's bytes."""
        try:
            response = self._http.get("/ssh/krl")
        except httpx.TransportError as exc:
            raise _transport_error(self.ca_url, exc) from None
        if response.is_error:
            try:
                body = response.json()
            except ValueError:
                body = None
            raise error_from_problem(response.status_code, body)
        return response.content
