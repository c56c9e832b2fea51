"""The CA's SSH endpoints (docs/ssh.md), over the client's verified HTTPS connection."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from ostiary.client.api import OstiaryClient, transport_error
from ostiary.client.errors import error_from_problem
from ostiary.ssh.krl import KRL_VERSION_HEADER
from ostiary.ssh.signature import renewal_message
from ostiary.tls import TLSIdentity, client_context


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

    def ssh_sign_in_certificate(
        self,
        public_key: str,
        provisioner: str,
        id_token: str,
        *,
        principals: Sequence[str] | None = None,
        lifetime: str | None = None,
    ) -> dict[str, Any]:
        """``POST /ssh/certificate`` with an OIDC sign-in made for ``public_key``."""
        body: dict[str, Any] = {
            "public_key": public_key,
            "provisioner": provisioner,
            "id_token": id_token,
        }
        if principals:
            body["principals"] = list(principals)
        if lifetime is not None:
            body["lifetime"] = lifetime
        answer: dict[str, Any] = self._call(self._http, "POST", "/ssh/certificate", json=body)
        return answer

    def ssh_exchange(
        self,
        public_key: str,
        certificate: x509.Certificate,
        private_key: CertificateIssuerPrivateKeyTypes,
        *,
        principals: Sequence[str] | None = None,
        lifetime: str | None = None,
    ) -> dict[str, Any]:
        """``POST /ssh/exchange`` over mTLS with ``certificate`` (its key must be in memory)."""
        body: dict[str, Any] = {"public_key": public_key}
        if principals:
            body["principals"] = list(principals)
        if lifetime is not None:
            body["lifetime"] = lifetime
        context = client_context(
            self.trusted_roots, identity=TLSIdentity((certificate,), private_key)
        )
        with self._open(context) as http:
            answer: dict[str, Any] = self._call(http, "POST", "/ssh/exchange", json=body)
        return answer

    def ssh_renew(self, certificate_line: str, sign: Callable[[bytes], bytes]) -> dict[str, Any]:
        """Renew a host certificate: ``sign`` makes the host key's SSH signature blob."""
        challenge = self._call(self._http, "POST", "/ssh/renew/nonce")
        nonce = str(challenge.get("nonce", "")) if isinstance(challenge, dict) else ""
        blob = base64.b64decode(certificate_line.split()[1])
        signature = sign(renewal_message(nonce, blob))
        body = {
            "certificate": certificate_line.strip(),
            "nonce": nonce,
            "signature": base64.b64encode(signature).decode("ascii"),
        }
        answer: dict[str, Any] = self._call(self._http, "POST", "/ssh/renew", json=body)
        return answer

    def ssh_request(
        self, public_key: str, provisioner: str, principals: Sequence[str], note: str | None
    ) -> dict[str, Any]:
        """``POST /ssh/requests``: queue a request for an officer; its id (and code)."""
        body: dict[str, Any] = {
            "public_key": public_key,
            "provisioner": provisioner,
            "principals": list(principals),
        }
        if note is not None:
            body["note"] = note
        answer: dict[str, Any] = self._call(self._http, "POST", "/ssh/requests", json=body)
        return answer

    def ssh_request_status(self, request_id: str) -> dict[str, Any]:
        """``GET /ssh/requests/{id}``: its status; ``certificate`` once issued."""
        path = f"/ssh/requests/{quote(request_id, safe='')}"
        answer: dict[str, Any] = self._call(self._http, "GET", path)
        return answer

    def ssh_ca(self) -> dict[str, Any]:
        answer: dict[str, Any] = self._call(self._http, "GET", "/ssh/ca")
        return answer

    def ssh_status(self, cert_type: str, serial: int) -> dict[str, Any]:
        answer: dict[str, Any] = self._call(self._http, "GET", f"/ssh/status/{cert_type}/{serial}")
        return answer

    def ssh_krl(self) -> bytes:
        """``GET /ssh/krl``: the KRL's bytes."""
        return self.ssh_krl_after(None)[0]

    def ssh_krl_after(self, version: int | None, *, wait: float = 0) -> tuple[bytes, int | None]:
        """``GET /ssh/krl``, held up to ``wait`` seconds until its version passes ``version``;
        the KRL's bytes and its version (None from a CA that does not say).
        """
        params: dict[str, str] = {}
        if version is not None and wait > 0:
            params = {"after": str(version), "wait": f"{wait:g}"}
        try:
            response = self._http.get("/ssh/krl", params=params)
        except httpx.TransportError as exc:
            raise transport_error(self.ca_url, exc) from None
        if response.is_error:
            try:
                body = response.json()
            except ValueError:
                body = None
            raise error_from_problem(response.status_code, body)
        header = response.headers.get(KRL_VERSION_HEADER, "")
        return response.content, int(header) if header.isdigit() else None
