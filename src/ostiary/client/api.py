"""``OstiaryClient``: the CA's HTTP API (docs/api.md) for applications and the CLI.

Every call verifies the server against the CA's own roots (never the system store), turns
problem documents back into :class:`~ostiary.core.errors.OstiaryError` subclasses, and checks
what comes back: a certificate must chain to the trusted roots and carry the key that was
asked for. Unreachable CA or 5xx: :class:`~ostiary.client.errors.CAUnavailable`.

    with OstiaryClient.from_config() as ca:
        issued = ca.sign(csr, token)
        renewed = ca.renew(issued.certificate, key)
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Self
from urllib.parse import quote

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from ostiary.client._closing import ClosingClient
from ostiary.client.config import ClientConfig, load_client_config, normalize_ca_url
from ostiary.client.errors import CAUnavailable, error_from_problem
from ostiary.client.root_trust import adopt_roots
from ostiary.client.token_check import check_token_not_expired, explain_refusal
from ostiary.core.ca import fingerprint_sha256, issued_by
from ostiary.core.encoding import dump_certificate_chain_pem, load_certificate, serial_hex
from ostiary.core.errors import (
    BadRequest,
    InvalidCertificate,
    MalformedInput,
    OstiaryError,
    Unauthorized,
)
from ostiary.core.lifetime import format_duration
from ostiary.tls import TLSIdentity, client_context

#: How the holder of a certificate proves it when renewing or revoking: a TLS client
#: certificate, or a short JWT signed by its key (for CAs behind a TLS-terminating proxy).
Via = Literal["mtls", "token"]
HolderPurpose = Literal["renew", "revoke"]
Clock = Callable[[], datetime]

#: Lifetime of the holder tokens this client makes (the server accepts at most 5 minutes).
HOLDER_TOKEN_LIFETIME = timedelta(minutes=2)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate the CA issued, with the issuers it sent (leaf excluded)."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]

    @property
    def serial_number(self) -> int:
        return self.certificate.serial_number

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    def dump_pem(self) -> bytes:
        """The certificate followed by its chain, PEM: what a ``.crt`` file holds."""
        return dump_certificate_chain_pem([self.certificate, *self.chain])


class OstiaryClient(ClosingClient):
    """One CA, reached at ``ca_url``, trusted through ``roots``."""

    def __init__(
        self,
        ca_url: str,
        roots: Sequence[x509.Certificate],
        *,
        timeout: float = 30.0,
        clock: Clock = utc_now,
    ) -> None:
        self.ca_url = normalize_ca_url(ca_url)
        self.trusted_roots: tuple[x509.Certificate, ...] = tuple(roots)
        if not self.trusted_roots:
            raise BadRequest("no trusted root: run 'ostiary bootstrap' or give --root")
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self._clock = clock
        self._http = self._open(client_context(self.trusted_roots))

    @classmethod
    def from_config(cls, config: ClientConfig | None = None, **options: Any) -> Self:
        """A client for the CA saved by ``ostiary bootstrap`` (or the one given)."""
        config = config or load_client_config()
        return cls(config.ca_url, config.trusted_roots, **options)

    # -- public endpoints -------------------------------------------------------------------

    def health(self) -> None:
        """Return if the CA answers ``/health``; raise :class:`CAUnavailable` otherwise."""
        self._call(self._http, "GET", "/health")

    def roots(self) -> list[x509.Certificate]:
        """The CA's current roots (``GET /roots``), over a connection verified by ours."""
        body = self._call(self._http, "GET", "/roots")
        return [load_certificate(pem.encode()) for pem in _field(body, "roots", list)]

    def current_issuer(self) -> x509.Certificate | None:
        """The intermediate the CA issues from now (the first of ``/intermediates.pem``),
        checked to be signed by a trusted root; None from a CA without that list.
        """
        try:
            answer = self._http.get("/intermediates.pem")
        except httpx.TransportError as exc:
            raise transport_error(self.ca_url, exc) from None
        if answer.status_code == 404:
            return None
        if answer.is_error or not answer.content.strip():
            raise CAUnavailable(f"{self.ca_url}/intermediates.pem: HTTP {answer.status_code}")
        try:
            current = x509.load_pem_x509_certificates(answer.content)[0]
        except ValueError:
            raise InvalidCertificate("the CA's /intermediates.pem holds no certificate") from None
        if not issued_by(current, self.trusted_roots) and not issued_by(
            current, self._next_roots()
        ):
            raise InvalidCertificate("the CA's current intermediate is not signed by its root")
        return current

    def _next_roots(self) -> tuple[x509.Certificate, ...]:
        """Roots of ``/roots`` that a cross-certificate from a trusted root vouches for
        (after ``ca root rotate``; :mod:`ostiary.client.root_trust`).
        """
        body = self._call(self._http, "GET", "/roots")
        offered = [load_certificate(pem.encode()) for pem in _field(body, "roots", list)]
        cross = body.get("cross_certificates", []) if isinstance(body, dict) else []
        crossed = [load_certificate(p.encode()) for p in cross if isinstance(p, str)]
        now = datetime.now(UTC)
        return adopt_roots(self.trusted_roots, offered, crossed, now=now).adopted

    def issuer_retiring(self, certificate: x509.Certificate) -> bool:
        """Whether ``certificate`` was issued by an intermediate the CA no longer issues
        from (after ``ca intermediate rotate``): then it is worth renewing early.
        """
        current = self.current_issuer()
        if current is None:
            return False
        return not issued_by(certificate, [current])

    # -- enrollment -------------------------------------------------------------------------

    def sign(
        self,
        csr: x509.CertificateSigningRequest,
        token: str,
        not_after: timedelta | datetime | str | None = None,
        *,
        attestation: dict[str, Any] | None = None,
    ) -> IssuedCertificate:
        """A certificate for ``csr``, authorized by a provisioner's one-time ``token``.

        ``not_after`` is a lifetime (``timedelta`` or ``"24h"``) or an absolute time; the
        provisioner's claims bound it. ``attestation``: a TPM attestation of the key, for a
        provisioner that requires one.
        """
        check_token_not_expired(token, now=self._clock())
        body: dict[str, Any] = {"csr": _pem(csr), "token": token}
        if attestation is not None:
            body["attestation"] = attestation
        if not_after is not None:
            body["not_after"] = _format_not_after(not_after)
        try:
            answer = self._call(self._http, "POST", "/sign", json=body)
        except Unauthorized as exc:  # name the CA that was asked: it may be the wrong one
            root = self.trusted_roots[0]
            detail = explain_refusal(token, exc.detail, ca_url=self.ca_url, root=root)
            raise type(exc)(detail, **exc.data) from None
        return self._issued(answer, expected_key=csr.public_key())

    def submit_request(
        self,
        csr: x509.CertificateSigningRequest,
        provisioner: str,
        note: str | None = None,
        *,
        attestation: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Submit ``csr`` for an officer's approval (``POST /requests``); the answer as is.

        ``attestation``: a TPM attestation of the key, for a provisioner that requires one.
        """
        body: dict[str, Any] = {"csr": _pem(csr), "provisioner": provisioner}
        if note is not None:
            body["note"] = note
        if attestation is not None:
            body["attestation"] = attestation
        answer: dict[str, Any] = self._call(self._http, "POST", "/requests", json=body)
        return answer

    def request_status(self, request_id: str) -> dict[str, Any]:
        """Where an approval request stands (``GET /requests/{id}``); the answer as is."""
        answer: dict[str, Any] = self._call(self._http, "GET", f"/requests/{request_id}")
        return answer

    def provisioner_type(self, name: str) -> str:
        """The type of provisioner ``name`` (``jwk``, ``approval``...), to choose the flow."""
        return str(_field(self._call(self._http, "GET", f"/provisioners/{name}/type"), "type", str))

    def issued_from(
        self, answer: dict[str, Any], csr: x509.CertificateSigningRequest
    ) -> IssuedCertificate:
        """Check and load a certificate answer (as from ``/sign``) for ``csr``'s key."""
        return self._issued(answer, expected_key=csr.public_key())

    def provisioner_info(self, name: str) -> dict[str, Any]:
        """How to sign in for provisioner ``name`` (``GET /provisioners/{name}``, oidc)."""
        answer = self._call(self._http, "GET", f"/provisioners/{quote(name, safe='')}")
        if not isinstance(answer, dict):
            raise MalformedInput("the CA's provisioner information is not a JSON object")
        return answer

    def redeem_code(self, name: str, code: str, code_verifier: str, redirect_uri: str) -> str:
        """Have the CA redeem an authorization code (confidential apps); the ID token."""
        body = {"code": code, "code_verifier": code_verifier, "redirect_uri": redirect_uri}
        answer = self._call(
            self._http, "POST", f"/provisioners/{quote(name, safe='')}/token", json=body
        )
        return str(_field(answer, "id_token", str))

    def sign_with_id_token(
        self,
        csr: x509.CertificateSigningRequest,
        provisioner: str,
        id_token: str,
        not_after: timedelta | datetime | str | None = None,
        *,
        attestation: dict[str, Any] | None = None,
    ) -> IssuedCertificate:
        """A certificate for ``csr``, authorized by an OpenID sign-in (``id_token``), with
        a TPM ``attestation`` of its key when the provisioner requires one.
        """
        body: dict[str, Any] = {"csr": _pem(csr), "id_token": id_token}
        if attestation is not None:
            body["attestation"] = attestation
        if not_after is not None:
            body["not_after"] = _format_not_after(not_after)
        path = f"/provisioners/{quote(provisioner, safe='')}/sign"
        answer = self._call(self._http, "POST", path, json=body)
        return self._issued(answer, expected_key=csr.public_key())

    def attestation_nonce(self) -> str:
        """A single-use nonce for a TPM attestation (``POST /attestation/nonce``)."""
        return str(_field(self._call(self._http, "POST", "/attestation/nonce"), "nonce", str))

    def sign_with_attestation(
        self,
        csr: x509.CertificateSigningRequest,
        provisioner: str,
        attestation: dict[str, Any],
        not_after: timedelta | datetime | str | None = None,
    ) -> IssuedCertificate:
        """A certificate for ``csr`` from an ``attest`` provisioner (docs/tpm.md)."""
        body: dict[str, Any] = {"csr": _pem(csr), "attestation": attestation}
        if not_after is not None:
            body["not_after"] = _format_not_after(not_after)
        path = f"/provisioners/{quote(provisioner, safe='')}/attest"
        answer = self._call(self._http, "POST", path, json=body)
        return self._issued(answer, expected_key=csr.public_key())

    def attestation_key_challenge(self, enrollment: dict[str, Any]) -> dict[str, Any]:
        """``POST /attestation/ak``: the CA's MakeCredential challenge (docs/tpm.md)."""
        answer = self._call(self._http, "POST", "/attestation/ak", json=enrollment)
        return {k: _field(answer, k, str) for k in ("credential_blob", "encrypted_secret")}

    def attestation_key_certificate(
        self, enrollment: dict[str, Any], secret: str, expected_key: Any
    ) -> IssuedCertificate:
        """``POST /attestation/ak/certificate``: the AK certificate for the opened challenge."""
        body = {**enrollment, "secret": secret}
        answer = self._call(self._http, "POST", "/attestation/ak/certificate", json=body)
        return self._issued(answer, expected_key=expected_key)

    def renew(
        self,
        certificate: x509.Certificate,
        private_key: CertificateIssuerPrivateKeyTypes,
        csr: x509.CertificateSigningRequest | None = None,
        via: Via = "mtls",
        *,
        chain: Sequence[x509.Certificate] = (),
    ) -> IssuedCertificate:
        """A new certificate for the holder of ``certificate`` (proven with ``private_key``).

        Without ``csr`` the new certificate keeps the key; with one (signed by the new key),
        it moves to that key. ``chain`` (the issuers) is sent along in mTLS.
        """
        body: dict[str, Any] = {} if csr is None else {"csr": _pem(csr)}
        expected = certificate.public_key() if csr is None else csr.public_key()
        answer = self._as_holder(
            "POST", "/renew", body, certificate, private_key, via=via, purpose="renew", chain=chain
        )
        return self._issued(answer, expected_key=expected)

    def revoke(
        self,
        serial_number: int,
        reason: x509.ReasonFlags = x509.ReasonFlags.unspecified,
        *,
        certificate: x509.Certificate | None = None,
        private_key: CertificateIssuerPrivateKeyTypes | None = None,
        admin_token: str | None = None,
        via: Via = "mtls",
    ) -> None:
        """Revoke ``serial_number``, as its holder (``certificate`` + ``private_key``) or
        with an admin token.
        """
        body = {"serial_number": serial_hex(serial_number), "reason": reason.value}
        if admin_token is not None:
            if certificate is not None or private_key is not None:
                raise ValueError("give either an admin token or the certificate and key")
            headers = {"Authorization": f"Bearer {admin_token}"}
            self._call(self._http, "POST", "/revoke", json=body, headers=headers)
            return
        if certificate is None or private_key is None:
            raise ValueError("revoking needs the certificate and its key, or an admin token")
        self._as_holder(
            "POST", "/revoke", body, certificate, private_key, via=via, purpose="revoke"
        )

    # -- plumbing ---------------------------------------------------------------------------

    def _open(self, context: ssl.SSLContext) -> httpx.Client:
        return httpx.Client(
            base_url=self.ca_url, verify=context, timeout=self._timeout, trust_env=False
        )

    def _as_holder(
        self,
        method: str,
        path: str,
        body: dict[str, Any],
        certificate: x509.Certificate,
        private_key: CertificateIssuerPrivateKeyTypes,
        *,
        via: Via,
        purpose: HolderPurpose,
        chain: Sequence[x509.Certificate] = (),
    ) -> Any:
        if via == "mtls" and _held_by_device(private_key):
            # Python's TLS needs the key material; a TPM or token key proves itself by
            # signing a holder token instead (the server accepts either).
            via = "token"
        if via == "token":
            token = self._holder_token(certificate, private_key, purpose=purpose)
            headers = {"Authorization": f"Bearer {token}"}
            return self._call(self._http, method, path, json=body, headers=headers)
        if via != "mtls":
            raise ValueError(f"via must be 'mtls' or 'token', not {via!r}")
        if chain and not _chains_to(certificate, chain, self.trusted_roots):
            # The server drops a foreign client certificate without an answer, which would
            # look like an outage; say what is wrong instead (without the chain we cannot).
            raise InvalidCertificate(
                "the certificate does not chain to the trusted root: it is not from this CA"
            )
        identity = TLSIdentity((certificate, *chain), private_key)
        context = client_context(self.trusted_roots, identity=identity)
        with self._open(context) as http:
            return self._call(http, method, path, json=body)

    def _holder_token(
        self,
        certificate: x509.Certificate,
        private_key: CertificateIssuerPrivateKeyTypes,
        *,
        purpose: HolderPurpose,
    ) -> str:
        from ostiary.provisioners.base import CAIdentity
        from ostiary.provisioners.holder import mint_holder_token

        token: str = mint_holder_token(
            certificate,
            private_key,
            purpose=purpose,
            ca=CAIdentity(root_fingerprint=fingerprint_sha256(self.trusted_roots[0])),
            now=self._clock(),
            lifetime=HOLDER_TOKEN_LIFETIME,
        )
        return token

    def _call(self, http: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise transport_error(self.ca_url, exc) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_error:
            raise error_from_problem(response.status_code, body)
        if body is None:
            raise CAUnavailable(
                f"the CA at {self.ca_url} answered {path} with something other than JSON"
            )
        return body

    def _issued(self, answer: Any, *, expected_key: Any) -> IssuedCertificate:
        certificate = load_certificate(_field(answer, "certificate", str).encode())
        chain = tuple(load_certificate(pem.encode()) for pem in _field(answer, "chain", list))
        issuers = tuple(c for c in chain if c not in self.trusted_roots)
        if certificate.public_key() != expected_key:
            raise InvalidCertificate("the CA returned a certificate for a different key")
        if not _chains_to(certificate, issuers, self.trusted_roots):
            raise InvalidCertificate(
                "the CA returned a certificate that does not chain to its root"
            )
        return IssuedCertificate(certificate, issuers)


def _held_by_device(private_key: CertificateIssuerPrivateKeyTypes) -> bool:
    from ostiary.core.held_keys import HeldECPrivateKey

    return isinstance(private_key, HeldECPrivateKey)


def _chains_to(
    certificate: x509.Certificate,
    issuers: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
) -> bool:
    """Whether signatures lead from ``certificate`` through ``issuers`` to one of ``roots``.

    Only the signatures: what the certificate is good for is the relying party's policy (a
    client certificate with a common name and no SAN is fine for many of them).
    """
    current = certificate
    for _ in range(len(issuers) + 1):
        if issued_by(current, roots):
            return True
        parent = next((c for c in issuers if issued_by(current, [c])), None)
        if parent is None:
            return False
        current = parent
    return False


def _pem(csr: x509.CertificateSigningRequest) -> str:
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _format_not_after(value: timedelta | datetime | str) -> str:
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("not_after needs a time zone")
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value


def _field(answer: Any, name: str, kind: type) -> Any:
    value = answer.get(name) if isinstance(answer, dict) else None
    if not isinstance(value, kind):
        raise MalformedInput(f"the CA's answer has no valid {name!r}")
    return value


def transport_error(ca_url: str, exc: httpx.TransportError) -> OstiaryError:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return InvalidCertificate(
                f"the server at {ca_url} is not trusted: its TLS certificate does not chain "
                f"to the CA root ({cause.verify_message})"
            )
        cause = cause.__cause__ or cause.__context__
    return CAUnavailable(f"cannot reach the CA at {ca_url}: {exc or type(exc).__name__}")
