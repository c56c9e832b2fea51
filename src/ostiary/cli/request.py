"""``ostiary cert request``: a new certificate from the CA, with a key made here (file or
TPM) and never sent, or for a CSR made elsewhere (``--csr``: a key in Windows' TPM by
``certreq``, in XCA, on a smart card) that never passes through us.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509

from ostiary.cli.acme_request import (
    AcmeDirectory,
    AcmeProfile,
    EabHmacFile,
    EabKid,
    Http01Address,
    Http01Port,
    TpmKeyOptions,
    request_over_acme,
)
from ostiary.cli.approval import request_by_approval
from ostiary.cli.cert import dump_private_key
from ostiary.cli.connect import CAUrl, RootFile, ca_connector
from ostiary.cli.console import note
from ostiary.cli.csr import read_csr_for, request_for_csr
from ostiary.cli.files import check_writable, write_file
from ostiary.cli.holder import (
    PKCS12Output,
    timestamp,
)
from ostiary.cli.oidc import sign_in_for
from ostiary.cli.options import Force, Sans
from ostiary.cli.tpm import ApprovalWait, TpmNoPin, TpmPinFile, TpmTcti, request_with_tpm
from ostiary.client.approval import APPROVAL_TYPE
from ostiary.client.credentials import (
    CredentialSource,
    KeyBoundCredentialSource,
    OneTimeToken,
)
from ostiary.client.enrollment import request_certificate
from ostiary.core.errors import BadRequest
from ostiary.core.keys import KeyType, parse_key_type
from ostiary.core.names import format_general_name, parse_san, parse_subject
from ostiary.provisioners.base import OIDC_TYPE

# --------------------------------------------------------------------------- request


def _credential_source(token: str | None) -> CredentialSource:
    """Where the proof for a new certificate comes from (later also an OIDC sign-in)."""
    if token is None:
        raise BadRequest("give --token (from 'ostiary ca token')")
    if token == "-":
        token = sys.stdin.readline().strip()
    return OneTimeToken(token)


def request(
    files: Annotated[
        list[str],
        typer.Argument(
            metavar="[SUBJECT] CRT [KEY]",
            help="The subject (a common name, or 'CN=..,O=..'; leave it out to take it from "
            "the token or the sign-in, or with approval from the first --san), the "
            "certificate (and chain) out, the private key out (0600; not with --csr, which "
            "needs SUBJECT CRT).",
            show_default=False,
        ),
    ],
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="One-time token from 'ostiary ca token' ('-': read stdin).",
            show_default=False,
        ),
    ] = None,
    san: Sans = None,
    not_after: Annotated[
        str | None,
        typer.Option(
            "--not-after",
            help="Lifetime (24h, 7d) or RFC 3339 time; the CA bounds it.",
            show_default=False,
        ),
    ] = None,
    kty: Annotated[
        str, typer.Option("--kty", help="p256, p384, ed25519, rsa2048, rsa3072, rsa4096.")
    ] = KeyType.P256.value,
    ca_url: CAUrl = None,
    root: RootFile = None,
    force: Force = False,
    provisioner: Annotated[
        str | None,
        typer.Option(
            "--provisioner",
            help="Enroll with this provisioner (an 'approval' one: an officer decides).",
            show_default=False,
        ),
    ] = None,
    request_note: Annotated[
        str | None, typer.Option("--note", help="For the officer (approval).", show_default=False)
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the officer's decision (approval).")
    ] = False,
    wait_timeout: Annotated[
        float,
        typer.Option(
            "--timeout", min=0, help="Seconds to wait with --wait, or for an oidc sign-in."
        ),
    ] = 600.0,
    no_browser: Annotated[
        bool,
        typer.Option(
            "--no-browser", help="oidc: print the sign-in address instead of opening a browser."
        ),
    ] = False,
    p12: Annotated[
        Path | None,
        typer.Option("--p12", help="Also write a .p12 (no password) here.", show_default=False),
    ] = None,
    key_store: Annotated[
        str,
        typer.Option(
            "--key-store", help="file (KEY is the key) or tpm (made in the TPM; docs/tpm.md)."
        ),
    ] = "file",
    pin_file: TpmPinFile = None,
    no_pin: TpmNoPin = False,
    tcti: TpmTcti = None,
    attest_key: Annotated[
        Path | None,
        typer.Option(
            "--attest-key",
            help="tpm: the TPM's attestation key (TSS2 PEM), to attest the new key.",
            show_default=False,
        ),
    ] = None,
    attest_chain: Annotated[
        Path | None,
        typer.Option(
            "--attest-chain",
            help="tpm: the attestation key's certificate (and chain), PEM.",
            show_default=False,
        ),
    ] = None,
    csr_file: Annotated[
        Path | None,
        typer.Option(
            "--csr",
            help="Send this CSR (PEM or DER) made elsewhere (certreq, XCA); its key stays there.",
            show_default=False,
        ),
    ] = None,
    acme: AcmeDirectory = None,
    profile: AcmeProfile = None,
    eab_kid: EabKid = None,
    eab_hmac_file: EabHmacFile = None,
    http01_port: Http01Port = 80,
    http01_address: Http01Address = "",
) -> None:
    """Get a certificate from the CA: the key is made here and never sent, only a CSR; or,
    with --csr, for a CSR whose key was made elsewhere and never passes through here; or,
    with --acme, from an ACME server.
    """
    subject, crt, key_file = _split_files(files, csr=csr_file is not None)
    names = [parse_san(value) for value in san or []]
    # Without SUBJECT the CSR has an empty subject: the CA takes the subject from what the
    # token or the sign-in authorizes (never from the CSR); an officer approves what is shown.
    name = parse_subject(subject) if subject is not None else x509.Name([])
    if acme is not None:
        if token or provisioner or csr_file or p12 or key_file is None:
            raise BadRequest(
                "--acme takes SUBJECT CRT KEY with --san, --kty, --root, --profile, --eab-* "
                "and --key-store: drop --token, --provisioner, --csr and --p12"
            )
        tpm = None
        if key_store == "tpm":
            tpm = TpmKeyOptions(tcti, pin_file, no_pin, attest_key, attest_chain)
        elif key_store != "file":
            raise BadRequest(f"--key-store must be file or tpm, not {key_store!r}")
        elif attest_key or attest_chain or pin_file or no_pin or tcti:
            raise BadRequest("--attest-*, --pin-file, --no-pin and --tcti go with --key-store tpm")
        request_over_acme(
            acme, name, names, crt, key_file, key_type=parse_key_type(kty), root=root,
            profile=profile, eab_kid=eab_kid, eab_hmac_file=eab_hmac_file,
            http01_port=http01_port, http01_address=http01_address, force=force, tpm=tpm,
        )  # fmt: skip
        return
    if profile is not None or eab_kid is not None or eab_hmac_file is not None:
        raise BadRequest("--profile and --eab-kid/--eab-hmac-file go with --acme")
    if csr_file is not None:
        if key_file is not None or key_store != "file" or p12 is not None:
            raise BadRequest("with --csr the key stays where the CSR was made: drop KEY, --p12")
        csr = read_csr_for(csr_file, name)
        request_for_csr(
            ca_connector(ca_url, root),
            csr,
            crt,
            token=token,
            provisioner=provisioner,
            not_after=not_after,
            force=force,
            approval=ApprovalWait(request_note, wait, wait_timeout, force),
            sign_in=(
                sign_in_for(provisioner, no_browser=no_browser, timeout=wait_timeout)
                if provisioner is not None
                else None
            ),
        )
        return
    if key_file is None:
        raise BadRequest("give KEY (where the new key goes), or --csr FILE")
    key_type = parse_key_type(kty)
    if key_store not in ("file", "tpm"):
        raise BadRequest(f"--key-store must be file or tpm, not {key_store!r}")
    if key_store == "tpm":
        if key_type is not KeyType.P256:
            raise BadRequest("a TPM key is P-256: drop --kty (or use --kty p256)")
        if p12 is not None:
            raise BadRequest("a TPM key cannot go into a .p12: drop --p12 (docs/tpm.md)")
        connect = ca_connector(ca_url, root)
        kind = None
        if provisioner is not None and token is None:
            with connect() as client:
                kind = client.provisioner_type(provisioner)
        if kind != APPROVAL_TYPE:  # an approval request may be resumed (checked there)
            check_writable(crt, key_file, force=force)
        elif subject is None:
            name = _subject_for_approval(san)
        request_with_tpm(
            connect,
            name,
            names,
            crt,
            key_file,
            provisioner=provisioner,
            provisioner_type=kind,
            token=token,
            not_after=not_after,
            pin_file=pin_file,
            tcti=tcti,
            attest_key=attest_key,
            attest_chain=attest_chain,
            sign_in=(
                sign_in_for(provisioner, no_browser=no_browser, timeout=wait_timeout)
                if provisioner is not None and kind == OIDC_TYPE
                else None
            ),
            approval=ApprovalWait(request_note, wait, wait_timeout, force),
            no_pin=no_pin,
        )
        return
    if no_pin:
        raise BadRequest("--no-pin goes with --key-store tpm")
    sign_in: KeyBoundCredentialSource | None = None
    if provisioner is not None and token is None:
        connect = ca_connector(ca_url, root)
        with connect() as client:
            kind = client.provisioner_type(provisioner)
        if kind == APPROVAL_TYPE:
            request_by_approval(
                connect,
                name if subject is not None else _subject_for_approval(san),
                names,
                crt,
                key_file,
                provisioner=provisioner,
                request_note=request_note,
                wait=wait,
                timeout=wait_timeout,
                key_type=key_type,
                force=force,
            )
            return
        if kind == OIDC_TYPE:
            sign_in = sign_in_for(provisioner, no_browser=no_browser, timeout=wait_timeout)
    check_writable(crt, key_file, *([p12] if p12 is not None else []), force=force)
    credential = sign_in if sign_in is not None else _credential_source(token)
    with ca_connector(ca_url, root)() as client:
        enrollment = request_certificate(
            client, name, names, credential=credential, key_type=key_type, not_after=not_after
        )
    write_file(key_file, dump_private_key(enrollment.private_key, None), private=True)
    write_file(crt, enrollment.issued.dump_pem())
    issued = enrollment.issued
    if p12 is not None:
        PKCS12Output(p12).write([issued.certificate, *issued.chain], enrollment.private_key)
        note(f"Wrote {p12} (no password)")
    note(f"Issued serial {issued.serial_number:x} to {issued.certificate.subject.rfc4514_string()}")
    note(f"  not_after: {timestamp(issued.not_after)}")
    note(f"Wrote {crt} and key {key_file}")


def _split_files(files: list[str], *, csr: bool) -> tuple[str | None, Path, Path | None]:
    """``[SUBJECT] CRT KEY`` (or ``SUBJECT CRT`` with --csr): the subject (None when left
    out), the certificate path and the key path.
    """
    if csr and len(files) == 2:
        return files[0], Path(files[1]), None
    if csr and len(files) != 3:  # three: KEY given, refused with --csr by the caller
        raise BadRequest("with --csr give SUBJECT CRT (the key stays where the CSR was made)")
    if len(files) == 3:
        return files[0], Path(files[1]), Path(files[2])
    if len(files) == 2:
        return None, Path(files[0]), Path(files[1])
    raise BadRequest("give [SUBJECT] CRT KEY: the certificate and key files, the subject if any")


def _subject_for_approval(sans: list[str] | None) -> x509.Name:
    """An approval request without SUBJECT is for its first --san: the officer sees both."""
    if not sans:
        raise BadRequest(
            "an approval request names what the officer approves: give SUBJECT or a --san"
        )
    value = format_general_name(parse_san(sans[0])).partition(":")[2]
    return x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, value)])
