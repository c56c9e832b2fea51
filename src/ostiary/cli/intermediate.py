"""``ostiary ca intermediate ...``: replace the issuing intermediate, list them all
(docs/lifecycle.md); and ``ca revoke --intermediate``'s work.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ostiary.authority.rollover import list_issuers, revoke_intermediate, rotate_intermediate
from ostiary.authority.root_crl import publish_root_crl
from ostiary.cli.console import note, out, print_table, shown
from ostiary.cli.options import CADir, PasswordFile
from ostiary.cli.unlock import NoPasswordFile, open_ca_store, unlock_ca
from ostiary.core.ca import fingerprint_sha256, key_id_hex
from ostiary.core.crl import parse_revocation_reason
from ostiary.core.errors import BadRequest
from ostiary.core.keys import parse_key_type
from ostiary.signers.files import FileSigner

intermediate_app = typer.Typer(
    help="The issuing intermediates: rotate to a new one, list them with their states.",
    no_args_is_help=True,
)


#: ``--key-type`` of a new CA key (``ca intermediate rotate``, ``ca root rotate``).
NewKeyType = Annotated[
    str | None,
    typer.Option(
        "--key-type",
        help="p256, p384, ed25519, rsa2048... (default: the CA's key type).",
        show_default=False,
    ),
]


@intermediate_app.command("rotate")
def rotate(
    key_type: NewKeyType = None,
    kms: Annotated[
        str | None,
        typer.Option(
            "--kms",
            help="Where the new key lives: 'file' or 'pkcs11'; it must be the CA's own kind "
            "(default).",
            show_default=False,
        ),
    ] = None,
    directory: CADir = None,
    password_file: PasswordFile = None,
) -> None:
    """Make a new intermediate under the root (new key) and issue with it from now on.

    The one it replaces keeps signing CRLs and OCSP answers for its leaves until the last
    one expires; renewals of its leaves are issued by the new one.
    """
    with unlock_ca(directory, password_file) as ca:
        config = ca.material.config
        if kms is not None and kms != config.kms:
            raise BadRequest(
                f"--kms {kms}: this CA keeps its keys in {config.kms!r}; a new intermediate's "
                "key lives there too"
            )
        chosen = parse_key_type(key_type) if key_type else config.key_type
        root_signer = ca.material.load_newest_root_signer(ca.password)
        try:
            certificate = rotate_intermediate(
                ca.material,
                ca.store,
                root_signer,
                key_type=chosen,
                password=None if config.kms == "pkcs11" else ca.password,
                now=datetime.now(UTC),
                actor="cli",
            )
        finally:
            root_signer.close()
    note(f"New issuing intermediate: {certificate.subject.rfc4514_string()}")
    note(f"  key id:      {key_id_hex(certificate)}")
    note(f"  fingerprint: {fingerprint_sha256(certificate)}")
    note(f"  not_after:   {certificate.not_valid_after_utc:%Y-%m-%d %H:%M}Z")
    note(
        "Running servers switch to it within a second; give relying parties the new bundle "
        "('ostiary ca crl-watch', 'ostiary gateway config')."
    )


@intermediate_app.command("list")
def list_intermediates(
    output_format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    directory: CADir = None,
    password_file: NoPasswordFile = None,
) -> None:
    """Every intermediate with its state: active, retiring, retired, expired or revoked."""
    if output_format not in ("table", "json"):
        raise BadRequest(f"--format must be table or json, not {output_format!r}")
    with open_ca_store(directory) as opened:
        states = list_issuers(opened.paths, opened.store, now=datetime.now(UTC))
    if output_format == "json":
        out.print_json(json.dumps([s.as_json() for s in states]))
        return
    table = Table("state", "subject", "key id", "not_after", "last leaf expires", "fingerprint")
    for state in states:
        last = state.last_leaf_expires
        table.add_row(
            state.state,
            shown(state.certificate.subject.rfc4514_string()),
            state.key_id[:16],
            f"{state.not_after:%Y-%m-%d}",
            f"{last:%Y-%m-%d %H:%M}Z" if last else "-",
            state.fingerprint,
        )
    print_table(table)


def revoke_intermediate_command(
    fingerprint: str, reason: str, directory: Path | None, password_file: Path | None
) -> None:
    """``ca revoke --intermediate``: record it, then make the root CRL again at once."""
    flag = parse_revocation_reason(reason)
    with unlock_ca(directory, password_file) as ca:
        now = datetime.now(UTC)
        subject = revoke_intermediate(
            ca.material, ca.store, fingerprint, reason=flag, now=now, actor="cli"
        )
        root_signer = ca.material.load_root_signer(ca.password)
        try:
            publish_root_crl(ca.material, ca.store, root_signer, now=now, actor="cli")
        finally:
            root_signer.close()
        for root in ca.material.paths.rotated_roots():  # it may be under a newer root
            paths = ca.material.paths
            signer = FileSigner.load(paths.rotated_root_key(key_id_hex(root)), ca.password)
            try:
                publish_root_crl(ca.material, ca.store, signer, now=now, actor="cli", root=root)
            finally:
                signer.close()
    note(f"Revoked intermediate {subject}, reason {flag.value}; the root CRL lists it.")


__all__ = ["NewKeyType", "intermediate_app", "revoke_intermediate_command"]
