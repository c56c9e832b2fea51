"""Approval enrollment on the client: submit a CSR, then poll until an officer decides.

The key is made here and never sent. :func:`submit_for_approval` returns the request id and,
if the provisioner wants one, the one-time code to tell the officer; :func:`wait_for_decision`
polls ``GET /requests/{id}`` (every ``interval``, up to ``timeout``) and returns the checked
certificate, or raises: :class:`RequestRejected` when rejected (with the officer's reason),
:class:`RequestExpired` when expired, :class:`RequestPending` when the time is up.
:func:`check_decision` asks once: the certificate, or None while the request waits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from ostiary.client.api import IssuedCertificate, OstiaryClient
from ostiary.client.enrollment import build_csr
from ostiary.core.errors import Conflict, MalformedInput, PolicyDenied, Unavailable

#: The provisioner type that enrolls this way.
APPROVAL_TYPE = "approval"


class RequestPending(Unavailable):
    """The request is still waiting for an officer when the client stopped waiting."""

    code = "request-pending"


class RequestRejected(PolicyDenied):
    """An officer rejected the request: it will never be issued (``reason`` is theirs)."""

    def __init__(self, request_id: str, reason: str) -> None:
        super().__init__(
            f"request {request_id} was rejected by an officer: {reason}",
            request_id=request_id,
            reason=reason,
        )
        self.request_id = request_id
        self.reason = reason


class RequestExpired(Conflict):
    """The request expired before an officer approved it: it will never be issued."""

    def __init__(self, request_id: str) -> None:
        super().__init__(
            f"request {request_id} expired before an officer approved it", request_id=request_id
        )
        self.request_id = request_id


@dataclass(frozen=True)
class SubmittedRequest:
    request_id: str
    code: str | None
    expires_at: str


def submit_for_approval(
    client: OstiaryClient,
    subject: x509.Name,
    sans: Sequence[x509.GeneralName],
    private_key: CertificateIssuerPrivateKeyTypes,
    *,
    provisioner: str,
    note: str | None = None,
    attestation: Callable[[], dict[str, Any]] | None = None,
) -> SubmittedRequest:
    """Send a CSR for ``private_key`` to an ``approval`` provisioner.

    ``attestation`` makes the TPM attestation of the key (after the CSR, so that a TPM key
    is not asked for two things at once), for a provisioner that requires one.
    """
    csr = build_csr(subject, sans, private_key)
    statement = attestation() if attestation is not None else None
    return submit_csr(client, csr, provisioner=provisioner, note=note, attestation=statement)


def submit_csr(
    client: OstiaryClient,
    csr: x509.CertificateSigningRequest,
    *,
    provisioner: str,
    note: str | None = None,
    attestation: dict[str, Any] | None = None,
) -> SubmittedRequest:
    """Send ``csr`` (ours, or made elsewhere) to an ``approval`` provisioner."""
    answer = client.submit_request(csr, provisioner, note, attestation=attestation)
    request_id = answer.get("request_id")
    if not isinstance(request_id, str):
        raise MalformedInput("the CA's answer has no valid 'request_id'")
    code = answer.get("code")
    return SubmittedRequest(
        request_id, code if isinstance(code, str) else None, str(answer.get("expires_at"))
    )


def wait_for_decision(
    client: OstiaryClient,
    request_id: str,
    private_key: CertificateIssuerPrivateKeyTypes | x509.CertificateSigningRequest,
    *,
    timeout: float,
    interval: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> IssuedCertificate:
    """Poll until the request is decided; the certificate (checked against our key, or the
    key of the CSR when the key was made elsewhere).
    """
    deadline = monotonic() + max(timeout, 0.0)
    while True:
        issued = check_decision(client, request_id, private_key)
        if issued is not None:
            return issued
        if monotonic() >= deadline:
            raise RequestPending(
                f"request {request_id} is still pending; run the same command again to wait"
            )
        sleep(min(interval, max(deadline - monotonic(), 0.05)))


def check_decision(
    client: OstiaryClient,
    request_id: str,
    private_key: CertificateIssuerPrivateKeyTypes | x509.CertificateSigningRequest,
) -> IssuedCertificate | None:
    """Ask once where the request stands: the certificate once issued (checked against our
    key, or the key of the CSR made elsewhere), None while it waits; raises
    :class:`RequestRejected` or :class:`RequestExpired` when it will never be issued.
    """
    answer = client.request_status(request_id)
    status = answer.get("status")
    if status == "issued" and isinstance(answer.get("certificate"), dict):
        expected = (
            private_key
            if isinstance(private_key, x509.CertificateSigningRequest)
            else _csr_stub(private_key)
        )
        return client.issued_from(answer["certificate"], expected)
    if status == "rejected":
        raise RequestRejected(request_id, str(answer.get("reason") or "no reason given"))
    if status == "expired":
        raise RequestExpired(request_id)
    return None


def _csr_stub(private_key: CertificateIssuerPrivateKeyTypes) -> x509.CertificateSigningRequest:
    """A throwaway CSR carrying our public key: what the certificate must be for."""
    return build_csr(x509.Name([]), [], private_key)


def format_deadline(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ")
