"""``ca provisioner add --type est`` and ``ca est code`` (docs/mdm.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from ostiary.cli.console import note
from ostiary.cli.options import CADir, Sans
from ostiary.cli.scep import GrantSubject, GrantTtl, print_grant
from ostiary.cli.unlock import open_ca_store
from ostiary.core.lifetime import parse_duration
from ostiary.provisioners import ProvisionerClaims
from ostiary.store import Store

est_app = typer.Typer(help="EST (RFC 7030): one-time enrollment codes.", no_args_is_help=True)

_ACTOR = "cli"


def add_est(
    store: Store, name: str, *, claims: ProvisionerClaims, ca_claims: ProvisionerClaims,
    profile: str,
) -> None:  # fmt: skip
    """Record an ``est`` provisioner from the CLI's options."""
    from ostiary.provisioners.est import add_est_provisioner

    add_est_provisioner(
        store, name, claims=claims, profile=profile, now=datetime.now(UTC), ca_claims=ca_claims,
        actor=_ACTOR,
    )  # fmt: skip
    note(f"Added provisioner '{name}' (type est, profile {profile})")
    note(f"  URL: <CA https url>/.well-known/est/{name}/")
    note(f"Make a code with: ostiary ca est code --provisioner {name} --subject CN")


@est_app.command("code")
def code(
    provisioner: Annotated[str, typer.Option("--provisioner", help="The est provisioner.")],
    subject: GrantSubject,
    san: Sans = None,
    ttl: GrantTtl = "1h",
    directory: CADir = None,
) -> None:
    """Make a one-time enrollment code bound to a subject and SANs; prints it on stdout.

    The device sends it as the HTTP Basic password of 'simpleenroll'. Needs the CA's
    database, not its password.
    """
    from ostiary.provisioners.est import make_est_code

    with open_ca_store(directory) as ca:
        made = make_est_code(
            ca.store, provisioner, subject=subject, sans=tuple(san or ()),
            ttl=parse_duration(ttl), now=datetime.now(UTC), actor=_ACTOR,
        )  # fmt: skip
    print_grant(made, "One-time EST code")
