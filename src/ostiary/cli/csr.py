"""``ostiary cert request SUBJECT CRT --csr FILE``: a certificate for a CSR made elsewhere.

The key was made by another program (``certreq -new`` with the Microsoft Platform Crypto
Provider puts it in Windows' TPM; XCA keeps it in its database; a smart card's tool) and never
passes through us: we read the CSR, check that it is signed by its key and asks for the
SUBJECT given, and send it through the same provisioners as a key made here: a one-time token,
an officer's approval (resumed by running the command again, as for a key made here), an OIDC
sign-in. Only the certificate (and chain) is written, and with approval ``CRT.request`` once the
CA has accepted the request (removed once it is collected, rejected or expired).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from ostiary.cli.approval import PendingRequest, collect, pending_file, save_accepted
from ostiary.cli.console import note
from ostiary.cli.files import check_writable, read_input, write_file
from ostiary.cli.holder import timestamp
from ostiary.cli.tpm import ApprovalWait
from ostiary.client.api import IssuedCertificate, OstiaryClient
from ostiary.client.approval import APPROVAL_TYPE, submit_csr
from ostiary.client.credentials import KeyBoundCredentialSource, OneTimeToken
from ostiary.core.encoding import load_csr
from ostiary.core.errors import BadRequest, InvalidCSR, MalformedInput
from ostiary.core.names import common_name
from ostiary.provisioners.base import OIDC_TYPE


def read_csr_for(path: Path, subject: x509.Name) -> x509.CertificateSigningRequest:
    """The CSR in ``path`` (PEM or DER), signed by its own key and for ``subject``'s name."""
    data = read_input(path, "CSR file")
    try:
        csr = load_csr(data)
    except MalformedInput:
        raise InvalidCSR(f"{path}: not a PKCS#10 certificate request (PEM or DER)") from None
    try:
        signed = csr.is_signature_valid
    except (ValueError, TypeError, NotImplementedError):  # an unsupported key or algorithm
        signed = False
    if not signed:
        raise InvalidCSR(f"{path}: the CSR's signature does not verify with its own key")
    asked, wanted = common_name(csr.subject), common_name(subject)
    if asked is not None and asked != wanted:
        raise BadRequest(
            f"{path} asks for CN={asked}, not {subject.rfc4514_string()}: "
            "give the CSR's subject as SUBJECT"
        )
    return csr


def request_for_csr(
    connect: Callable[[], OstiaryClient],
    csr: x509.CertificateSigningRequest,
    crt: Path,
    *,
    token: str | None,
    provisioner: str | None,
    not_after: str | None,
    force: bool,
    approval: ApprovalWait,
    sign_in: KeyBoundCredentialSource | None,
) -> None:
    """Have the CA sign ``csr`` (token, approval or OIDC, as the provisioner is) into ``crt``."""
    if token is None and provisioner is None:
        raise BadRequest("give --token (from 'ostiary ca token') or --provisioner NAME")
    with connect() as client:
        kind = None
        if token is None and provisioner is not None:
            kind = client.provisioner_type(provisioner)
        if kind == APPROVAL_TYPE and provisioner is not None:
            issued = _by_approval(client, csr, crt, provisioner, approval)
            if issued is None:
                return
        else:
            check_writable(crt, force=force)
            if kind == OIDC_TYPE and sign_in is not None:
                issued = sign_in.enroll(client, csr, not_after)
            elif token is not None:
                issued = client.sign(csr, OneTimeToken(token).token_for(csr.subject, []), not_after)
            else:
                raise BadRequest(
                    f"provisioner {provisioner!r} ({kind}) does not enroll a CSR without --token"
                )
    write_file(crt, issued.dump_pem())
    note(f"Issued serial {issued.serial_number:x} to {issued.certificate.subject.rfc4514_string()}")
    note(f"  not_after: {timestamp(issued.not_after)}")
    note(f"Wrote {crt} (the key stays where the CSR was made)")


def _by_approval(
    client: OstiaryClient,
    csr: x509.CertificateSigningRequest,
    crt: Path,
    provisioner: str,
    approval: ApprovalWait,
) -> IssuedCertificate | None:
    """Submit (or, with ``CRT.request`` there, resume); the certificate once approved. Only
    an accepted request writes ``CRT.request``; a rejected or expired one removes it.
    """
    resumed = pending_file(crt).exists() and not approval.force
    if resumed:
        pending = PendingRequest.read(crt)
        note(f"Resuming request {pending.request_id}")
    else:
        check_writable(crt, force=approval.force)
        submitted = submit_csr(client, csr, provisioner=provisioner, note=approval.note)
        pending = save_accepted(crt, submitted, None, None)
    issued = collect(
        client, crt, None, pending, csr,
        wait=approval.wait, timeout=approval.timeout, resumed=resumed,
    )  # fmt: skip
    if issued is not None:
        pending_file(crt).unlink(missing_ok=True)
    return issued


__all__ = ["read_csr_for", "request_for_csr"]
