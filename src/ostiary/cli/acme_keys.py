"""``ostiary ca acme eab add|list|remove`` and ``ostiary ca acme renew-early`` (docs/acme.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from ostiary.cli.console import note, out, print_table, shown
from ostiary.cli.options import CADir, PasswordFile
from ostiary.cli.unlock import NoPasswordFile, open_ca_store, unlock_ca
from ostiary.core.errors import BadRequest
from ostiary.core.lifetime import parse_duration

eab_app = typer.Typer(
    help="External Account Binding keys: who may open an ACME account.", no_args_is_help=True
)

_ACTOR = "cli"

Provisioner = Annotated[str, typer.Option("--provisioner", help="The acme provisioner.")]


def _now() -> datetime:
    return datetime.now(UTC)


@eab_app.command("add")
def eab_add(
    provisioner: Provisioner,
    names: Annotated[
        list[str] | None,
        typer.Option(
            "--names",
            help="Narrow what the account may order (repeatable), e.g. '*.lab.example'.",
            show_default=False,
        ),
    ] = None,
    directory: CADir = None,
    password_file: PasswordFile = None,
) -> None:
    """Make a key id and an HMAC key, printed once: the key is kept sealed, never shown again."""
    from ostiary.provisioners.acme_eab import add_eab_key
    from ostiary.signers.sealing import Sealer

    with unlock_ca(directory, password_file) as ca:
        made = add_eab_key(
            ca.store,
            Sealer(ca.password),
            provisioner,
            names=tuple(names or ()),
            now=_now(),
            actor=_ACTOR,
        )
    note(f"EAB key for provisioner '{provisioner}', binds one account, once")
    if made.names:
        note(f"  names: {', '.join(made.names)}")
    note("  shown once: certbot --eab-kid KID --eab-hmac-key KEY; lego --eab --kid KID --hmac KEY")
    out.print(f"kid: {made.kid}", markup=False, highlight=False)
    out.print(f"hmac-key: {made.hmac_key}", markup=False, highlight=False)


@eab_app.command("list")
def eab_list(
    provisioner: Annotated[
        str | None,
        typer.Option("--provisioner", help="Only this provisioner's.", show_default=False),
    ] = None,
    format_: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    directory: CADir = None,
    password_file: NoPasswordFile = None,
) -> None:
    """List EAB keys (ids, names, whether bound): never a key."""
    from ostiary.provisioners.acme_eab import list_eab_keys

    if format_ not in ("table", "json"):
        raise BadRequest(f"unknown format {format_!r}: use table or json")
    with open_ca_store(directory) as ca:
        keys = list_eab_keys(ca.store, provisioner)
    if format_ == "json":
        rows = [
            {
                "kid": k.kid,
                "provisioner": k.provisioner,
                "names": list(k.names),
                "created_at": k.created_at.isoformat(),
                "bound_at": k.bound_at.isoformat() if k.bound_at else None,
                "account": k.account_id,
            }
            for k in keys
        ]
        out.print_json(json.dumps(rows))
        return
    table = Table("kid", "provisioner", "names", "created", "bound")
    for k in keys:
        table.add_row(
            shown(k.kid),
            shown(k.provisioner),
            shown(", ".join(k.names)) or "any",
            f"{k.created_at:%Y-%m-%d %H:%M}",
            f"{k.bound_at:%Y-%m-%d %H:%M} ({shown(k.account_id)})" if k.bound_at else "no",
        )
    print_table(table)


@eab_app.command("remove")
def eab_remove(
    kid: Annotated[str, typer.Argument(metavar="KID", help="The key id.")],
    provisioner: Provisioner,
    directory: CADir = None,
    password_file: NoPasswordFile = None,
) -> None:
    """Remove a key; if it bound an account, that account is deactivated."""
    from ostiary.provisioners.acme_eab import remove_eab_key

    with open_ca_store(directory) as ca:
        account = remove_eab_key(ca.store, provisioner, kid, now=_now(), actor=_ACTOR)
    note(f"Removed EAB key {kid}")
    if account is not None:
        note(f"  deactivated the account it bound ({account})")


def renew_early(
    serial: Annotated[
        str | None,
        typer.Option("--serial", help="One certificate (hex serial).", show_default=False),
    ] = None,
    issuer: Annotated[
        str | None,
        typer.Option(
            "--issuer",
            help="Every certificate of the issuing CA with this SHA-256 fingerprint.",
            show_default=False,
        ),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every ACME certificate.")] = False,
    provisioner: Annotated[
        str | None,
        typer.Option("--provisioner", help="Only this provisioner's.", show_default=False),
    ] = None,
    spread: Annotated[
        str | None,
        typer.Option(
            "--spread",
            help="Clients renew within this long from now (default: 1m for --serial, else 1h).",
            show_default=False,
        ),
    ] = None,
    directory: CADir = None,
    password_file: NoPasswordFile = None,
) -> None:
    """Pull ACME renewal windows forward (RFC 9773): clients asking renewalInfo renew now."""
    from ostiary.core.ca import fingerprint_sha256, key_id_hex
    from ostiary.core.encoding import parse_serial
    from ostiary.provisioners.acme_renewal import renew_early as record_rule

    if sum((serial is not None, issuer is not None, all_)) != 1:
        raise BadRequest("give exactly one of --serial, --issuer and --all")
    default = "1m" if serial is not None else "1h"
    with open_ca_store(directory) as ca:
        issuer_key_id = None
        if issuer is not None:
            wanted = issuer.strip().lower().replace(":", "")
            if wanted != fingerprint_sha256(ca.intermediate):
                raise BadRequest(
                    f"--issuer {issuer[:80]!r} is not the SHA-256 fingerprint of this CA's "
                    f"issuing certificate ({fingerprint_sha256(ca.intermediate)})"
                )
            issuer_key_id = key_id_hex(ca.intermediate)
        count = record_rule(
            ca.store,
            serial=parse_serial(serial) if serial is not None else None,
            issuer_key_id=issuer_key_id,
            provisioner=provisioner,
            spread=parse_duration(spread or default),
            now=_now(),
            actor=_ACTOR,
        )
    note(f"Renewal window pulled forward for {count} valid certificate(s)")
    note("  ACME clients that follow renewalInfo (RFC 9773) renew at their next check")


__all__ = ["eab_app", "renew_early"]
