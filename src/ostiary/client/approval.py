"""Approval enrollment on the client: submit a CSR, then poll until an officer decides.

The key is made here and never sent. :func:`submit_for_approval` returns the request id and,
if the provisioner wants one, the one-time code to tell the officer; :func:`wait_for_decision`
polls ``GET /requests/{id}`` (every ``interval``, up to ``timeout``) and returns the checked
certificate, or raises: :class:`PolicyDenied` when rejected (with the officer's reason),
:class:`Conflict` when expired, :class:`RequestPending` when the time is up.
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
    answer = client.submit_request(csr, provisioner, note, attestation=statement)
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
    expected = (
        private_key
        if isinstance(private_key, x509.CertificateSigningRequest)
        else _csr_stub(private_key)
    )
    deadline = monotonic() + max(timeout, 0.0)
    while True:
        answer = client.request_status(request_id)
        status = answer.get("status")
        if status == "issued" and isinstance(answer.get("certificate"), dict):
            issued = client.issued_from(answer["certificate"], expected)
            return issued
        if status == "rejected":
            raise PolicyDenied(f"the request was rejected: {answer.get('reason') or 'no reason'}")
        if status == "expired":
            raise Conflict("the request expired before an officer approved it")
        if monotonic() >= deadline:
            raise RequestPending(
                f"request {request_id} is still pending; run the same command again to wait"
            )
        sleep(min(interval, max(deadline - monotonic(), 0.05)))


def _csr_stub(private_key: CertificateIssuerPrivateKeyTypes) -> x509.CertificateSigningRequest:
    """A throwaway CSR carrying our public key: what the certificate must be for."""
    return build_csr(x509.Name([]), [], private_key)


def format_deadline(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ")
