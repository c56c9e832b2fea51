"""``--key-store tpm``: client keys made in, and used through, a TPM 2.0 (docs/tpm.md).

``cert request ... --key-store tpm`` has the TPM make the key, signs the CSR there and writes
``KEY`` as a ``TSS2 PRIVATE KEY`` PEM (the TPM's wrapped blob, usable only in that TPM, by
us or the tpm2 OpenSSL provider). With ``--attest-key`` the TPM also certifies the new key
over a nonce from the CA, and the statement goes with the CSR: to an ``attest`` provisioner
(``POST /provisioners/{name}/attest``), or to one that requires attestation.

The TPM is reached through ``--tcti`` (``swtpm:host=...,port=...``, ``device:/dev/tpmrm0``),
else ``$OSTIARY_TPM_TCTI``, else the TSS default. The PIN comes from ``--pin-file``, else
``$OSTIARY_TPM_PIN``, else (for a new key, on a terminal) a prompt that refuses an empty PIN;
a key without a PIN is made only with ``--no-pin``. No TPM can attest that a PIN was set:
this is where the client keeps its promise.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from cryptography import x509

from ostiary.cli.attest import ATTEST_TYPE
from ostiary.cli.console import note
from ostiary.cli.files import check_writable, read_input, write_file
from ostiary.cli.secrets import read_password_file
from ostiary.client.approval import APPROVAL_TYPE
from ostiary.core.encoding import load_certificate_chain
from ostiary.core.errors import BadRequest

if TYPE_CHECKING:
    from ostiary.client.api import IssuedCertificate, OstiaryClient
    from ostiary.client.oidc import OIDCSignIn
    from ostiary.client.tpm import AttestationKey, TpmPrivateKey

#: Environment variables for the TPM's TCTI and the key's PIN.
TCTI_ENV = "OSTIARY_TPM_TCTI"
PIN_ENV = "OSTIARY_TPM_PIN"

TpmPinFile = Annotated[
    Path | None,
    typer.Option(
        "--pin-file",
        help="tpm: file holding the key's PIN (or $OSTIARY_TPM_PIN).",
        show_default=False,
    ),
]
TpmNoPin = Annotated[
    bool,
    typer.Option(
        "--no-pin",
        help="tpm: make the key without a PIN (whoever holds the device can use it).",
    ),
]
TpmTcti = Annotated[
    str | None,
    typer.Option(
        "--tcti",
        help="tpm: how to reach the TPM, e.g. device:/dev/tpmrm0 (or $OSTIARY_TPM_TCTI).",
        show_default=False,
    ),
]


def tpm_tcti(tcti: str | None) -> str | None:
    return tcti or os.environ.get(TCTI_ENV) or None


def tpm_pin(pin_file: Path | None) -> bytes | None:
    if pin_file is not None:
        return read_password_file(pin_file)
    pin = os.environ.get(PIN_ENV)
    return pin.encode("utf-8") if pin else None


def new_key_pin(pin_file: Path | None, *, no_pin: bool) -> bytes | None:
    """The PIN of a new TPM key: ``--pin-file``, ``$OSTIARY_TPM_PIN``, or asked on the terminal.

    An empty PIN is refused; ``--no-pin`` (and only it) makes a key without one.
    """
    if no_pin:
        if pin_file is not None:
            raise BadRequest("give --pin-file or --no-pin, not both")
        return None
    pin = tpm_pin(pin_file)
    if pin is not None:
        return pin
    if not sys.stdin.isatty():
        raise BadRequest(
            "a TPM key needs a PIN: give --pin-file or set OSTIARY_TPM_PIN (no terminal to "
            "ask on), or --no-pin for a key anyone holding the device can use"
        )
    pin = getpass.getpass("PIN for the new TPM key: ").encode("utf-8")
    if not pin:
        raise BadRequest("the PIN is empty: for a key without a PIN give --no-pin")
    if getpass.getpass("Repeat it: ").encode("utf-8") != pin:
        raise BadRequest("the two PINs differ")
    return pin


def load_tpm_key_file(
    path: Path, *, tcti: str | None, pin_file: Path | None, pin_option: str | None = "--pin-file"
) -> TpmPrivateKey:
    """A TPM key from its TSS2 PEM file; ``pin_option`` is the command's option for its PIN
    (None: the command has none, only ``$OSTIARY_TPM_PIN``).
    """
    from ostiary.client.tpm import PinRequired, load_tpm_key_pem

    data = read_input(path, "key file")
    try:
        return load_tpm_key_pem(data, tcti=tpm_tcti(tcti), pin=tpm_pin(pin_file))
    except PinRequired:
        give = f"give {pin_option}, or set {PIN_ENV}" if pin_option else f"set {PIN_ENV}"
        raise PinRequired(f"TPM key {path} has a PIN: {give}") from None


def load_attestation_key_file(
    path: Path, *, tcti: str | None, option: str, enrolling: bool = False
) -> TpmPrivateKey:
    """The AK from ``tpm ak create``, given with ``option``: it has no PIN, and an error
    about it names it, not the key being enrolled (``enrolling``: one whose PIN is
    --pin-file's).
    """
    from ostiary.client.tpm import PinRequired, load_tpm_key_pem

    data = read_input(path, "attestation key")
    what = f"attestation key {path} ({option})"
    try:
        return load_tpm_key_pem(data, tcti=tcti, pin=None, what=what)
    except PinRequired:
        enrolled = " (--pin-file is the PIN of the key being enrolled)" if enrolling else ""
        raise BadRequest(
            f"{what} is marked as having a PIN: an AK has none{enrolled}; make the AK with "
            "'ostiary tpm ak create'"
        ) from None


def attestation_key(
    attest_key: Path | None, attest_chain: Path | None, *, tcti: str | None
) -> AttestationKey | None:
    from ostiary.client.tpm import AttestationKey

    if attest_key is None and attest_chain is None:
        return None
    if attest_key is None or attest_chain is None:
        raise BadRequest("give both --attest-key and --attest-chain, or neither")
    key = load_attestation_key_file(attest_key, tcti=tcti, option="--attest-key", enrolling=True)
    chain = load_certificate_chain(read_input(attest_chain, "attestation key chain"))
    if chain[0].public_key() != key.public_key():
        raise BadRequest(f"{attest_chain} is not the certificate of attestation key {attest_key}")
    return AttestationKey(key, tuple(chain))


def request_with_tpm(
    connect: Callable[[], OstiaryClient],
    subject: x509.Name,
    sans: Sequence[x509.GeneralName],
    crt: Path,
    key_file: Path,
    *,
    provisioner: str | None,
    provisioner_type: str | None,
    token: str | None,
    not_after: str | None,
    pin_file: Path | None,
    tcti: str | None,
    attest_key: Path | None,
    attest_chain: Path | None,
    sign_in: OIDCSignIn | None,
    approval: ApprovalWait | None = None,
    no_pin: bool = False,
) -> None:
    """``cert request --key-store tpm``: see the module docstring."""
    from ostiary.client.enrollment import build_csr
    from ostiary.client.tpm import certify_key, create_tpm_key

    reach = tpm_tcti(tcti)
    if provisioner is not None and provisioner_type == APPROVAL_TYPE:
        _request_approval(
            connect, subject, sans, crt, key_file, provisioner, approval or ApprovalWait(),
            pin_file=pin_file, tcti=reach, attest_key=attest_key, attest_chain=attest_chain,
            no_pin=no_pin,
        )  # fmt: skip
        return
    pin = new_key_pin(pin_file, no_pin=no_pin)
    ak = attestation_key(attest_key, attest_chain, tcti=reach)
    key = create_tpm_key(tcti=reach, pin=pin)
    csr = build_csr(subject, sans, key)
    with connect() as client:
        attestation: dict[str, Any] | None = None
        if ak is not None:
            attestation = certify_key(key, ak, client.attestation_nonce()).to_json()
        issued = _enroll(
            client, csr, provisioner, provisioner_type, token, not_after, attestation, sign_in
        )
    write_file(key_file, key.to_pem(), private=True)
    write_file(crt, issued.dump_pem())
    note(f"Issued serial {issued.serial_number:x} to {issued.certificate.subject.rfc4514_string()}")
    note(f"Wrote {crt} and TPM key {key_file} (TSS2 PEM: usable only in this TPM)")


@dataclass(frozen=True)
class ApprovalWait:
    """``cert request`` options of the approval flow."""

    note: str | None = None
    wait: bool = False
    timeout: float = 600.0
    force: bool = False


def _request_approval(
    connect: Callable[[], OstiaryClient],
    subject: x509.Name,
    sans: Sequence[x509.GeneralName],
    crt: Path,
    key_file: Path,
    provisioner: str,
    options: ApprovalWait,
    *,
    pin_file: Path | None,
    tcti: str | None,
    attest_key: Path | None,
    attest_chain: Path | None,
    no_pin: bool = False,
) -> None:
    """An officer decides: submit a TPM key's CSR (with its attestation), or resume waiting.

    The key file is written once the CA has accepted the request, so that the same command
    again collects the certificate for the key in the TPM (cli/approval.py says what is
    written and removed when).
    """
    from ostiary.cli.approval import PendingRequest, collect, pending_file, save_accepted
    from ostiary.client.approval import submit_for_approval
    from ostiary.client.tpm import certify_key, create_tpm_key

    marker = pending_file(crt)
    with connect() as client:
        resumed = marker.exists() and key_file.exists() and not options.force
        if resumed:
            pending = PendingRequest.read(crt)
            key = load_tpm_key_file(key_file, tcti=tcti, pin_file=pin_file)
            note(f"Resuming request {pending.request_id}")
        else:
            check_writable(crt, key_file, force=options.force)
            pin = new_key_pin(pin_file, no_pin=no_pin)
            ak = attestation_key(attest_key, attest_chain, tcti=tcti)
            key = create_tpm_key(tcti=tcti, pin=pin)
            attestation: Callable[[], dict[str, Any]] | None = None
            if ak is not None:
                attest = ak

                def make_attestation() -> dict[str, Any]:
                    return certify_key(key, attest, client.attestation_nonce()).to_json()

                attestation = make_attestation
            submitted = submit_for_approval(
                client, subject, sans, key, provisioner=provisioner, note=options.note,
                attestation=attestation,
            )  # fmt: skip
            pending = save_accepted(crt, submitted, key_file, key.to_pem())
        issued = collect(
            client, crt, key_file, pending, key,
            wait=options.wait, timeout=options.timeout, resumed=resumed,
        )  # fmt: skip
    if issued is None:
        return
    write_file(crt, issued.dump_pem())
    marker.unlink(missing_ok=True)
    note(f"Issued serial {issued.serial_number:x} to {subject.rfc4514_string()}")
    note(f"Wrote {crt} and TPM key {key_file} (TSS2 PEM: usable only in this TPM)")


def _enroll(
    client: OstiaryClient,
    csr: x509.CertificateSigningRequest,
    provisioner: str | None,
    provisioner_type: str | None,
    token: str | None,
    not_after: str | None,
    attestation: dict[str, Any] | None,
    sign_in: OIDCSignIn | None,
) -> IssuedCertificate:
    if sign_in is not None:
        id_token = sign_in.id_token_for(client, csr)
        return client.sign_with_id_token(
            csr, sign_in.provisioner, id_token, not_after, attestation=attestation
        )
    if token is not None:
        return client.sign(csr, token.strip(), not_after, attestation=attestation)
    if provisioner is None or provisioner_type != ATTEST_TYPE:
        raise BadRequest(
            "--key-store tpm enrolls with --token, or with an attest, oidc or approval "
            "--provisioner"
            + (f" ({provisioner!r} is of type {provisioner_type})" if provisioner else "")
        )
    if attestation is None:
        raise BadRequest(f"provisioner {provisioner!r} needs --attest-key and --attest-chain")
    return client.sign_with_attestation(csr, provisioner, attestation, not_after)
