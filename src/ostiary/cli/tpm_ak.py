"""``ostiary tpm ak ...``: the TPM's attestation key (AK), made the way our checks expect.

``ak create`` has the TPM make a restricted P-256 signing key (ECDSA/SHA-256) under the
standard TSS2 storage primary of the owner hierarchy (the one with ``noda`` that the TSS2
key-file format and tpm2-openssl recreate), with no PIN, and writes it (0600) as a
``TSS2 PRIVATE KEY`` PEM marked as having none. Every transient handle is flushed after,
so the TPM's few object slots stay free. See docs/tpm.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ostiary.cli.connect import CAUrl, RootFile
from ostiary.cli.console import note
from ostiary.cli.files import check_writable, write_file
from ostiary.cli.tpm import TpmTcti, load_attestation_key_file, tpm_tcti

app = typer.Typer(help="The device's TPM: its attestation key (docs/tpm.md).", no_args_is_help=True)
ak_app = typer.Typer(
    help="The TPM's attestation key (AK): make it, have it certified.", no_args_is_help=True
)
app.add_typer(ak_app, name="ak")


@ak_app.command("create")
def ak_create(
    out: Annotated[Path, typer.Option("--out", help="where to write the AK (TSS2 PEM, 0600)")],
    tcti: TpmTcti = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite --out")] = False,
) -> None:
    """Make an attestation key in the TPM: restricted signing, under the standard primary."""
    from ostiary.client.tpm import create_attestation_key

    check_writable(out, force=force)
    ak = create_attestation_key(tcti=tpm_tcti(tcti))
    write_file(out, ak.key.to_pem(), private=True)
    note(f"Wrote attestation key {out} (TSS2 PEM: usable only in this TPM, no PIN)")


@ak_app.command("enroll")
def ak_enroll(
    ak: Annotated[Path, typer.Option("--ak", help="the AK from 'tpm ak create'")],
    out: Annotated[
        Path, typer.Option("--out", help="where to write the AK certificate and its issuers")
    ],
    ca_url: CAUrl = None,
    root: RootFile = None,
    tcti: TpmTcti = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite --out")] = False,
) -> None:
    """Have the CA certify the AK, proving with the TPM's EK that it is in this TPM."""
    from ostiary.cli.connect import ca_connector
    from ostiary.client.tpm_ak import enroll_attestation_key

    check_writable(out, force=force)
    reach = tpm_tcti(tcti)
    key = load_attestation_key_file(ak, tcti=reach, option="--ak")
    connect = ca_connector(ca_url, root)
    with connect() as client:
        issued = enroll_attestation_key(client, key, tcti=reach)
    write_file(out, issued.dump_pem())
    subject = issued.certificate.subject.rfc4514_string()
    note(f"Wrote AK certificate {out} (serial {issued.serial_number:x}, {subject})")
    note("Use it with: cert request ... --attest-key " + str(ak) + " --attest-chain " + str(out))


__all__ = ["app"]
