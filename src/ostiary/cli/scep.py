"""``ca provisioner add --type scep`` and ``ca scep challenge`` (docs/mdm.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from ostiary.cli.console import err, note, out
from ostiary.cli.options import CADir, Sans
from ostiary.cli.unlock import UnlockedCA, open_ca_store
from ostiary.core.errors import BadRequest
from ostiary.core.lifetime import parse_duration
from ostiary.provisioners import ProvisionerClaims
from ostiary.provisioners.grants import Grant

scep_app = typer.Typer(help="SCEP: one-time challenges for devices and MDMs.", no_args_is_help=True)

_ACTOR = "cli"

Challenge = Annotated[
    str | None,
    typer.Option(
        "--challenge",
        help="scep: one-time (from 'ca scep challenge', the default), dynamic (the MDM asks "
        "for one-time challenges at an authenticated URL), webhook (an HTTPS service decides "
        "each request and names it) or static (one shared secret: weak, names from the CSR "
        "within --allow-name).",
        show_default=False,
    ),
]
WebhookUrl = Annotated[
    str | None,
    typer.Option(
        "--webhook-url",
        help="scep --challenge webhook: the https URL asked about every request.",
        show_default=False,
    ),
]
WebhookCaFile = Annotated[
    Path | None,
    typer.Option(
        "--webhook-ca-file",
        help="scep --challenge webhook: PEM roots for the webhook's TLS (default: the system's).",
        show_default=False,
    ),
]
WebhookTimeout = Annotated[
    int | None,
    typer.Option(
        "--webhook-timeout",
        help="scep --challenge webhook: seconds to wait for its answer (default 10).",
        show_default=False,
    ),
]
RequireApproval = Annotated[
    bool,
    typer.Option("--require-approval", help="scep: an officer approves each request."),
]


def add_scep(
    ca: UnlockedCA,
    name: str,
    *,
    claims: ProvisionerClaims,
    ca_claims: ProvisionerClaims,
    profile: str,
    challenge: str | None,
    require_approval: bool,
    webhook_url: str | None = None,
    webhook_ca_file: Path | None = None,
    webhook_timeout: int | None = None,
) -> None:
    """Record a ``scep`` provisioner (and its RA certificate) from the CLI's options."""
    from ostiary.provisioners.scep import (
        CHALLENGE_KINDS,
        DEFAULT_WEBHOOK_TIMEOUT,
        add_scep_provisioner,
    )

    kind = challenge or "one-time"
    if kind not in CHALLENGE_KINDS:
        raise BadRequest(f"unknown --challenge {kind!r}: use {', '.join(CHALLENGE_KINDS)}")
    if kind != "webhook" and (webhook_ca_file is not None or webhook_timeout is not None):
        raise BadRequest("--webhook-ca-file and --webhook-timeout are for --challenge webhook")
    provisioner, secret = add_scep_provisioner(
        ca.authority,
        name,
        password=ca.password,
        claims=claims,
        profile=profile,
        challenge=kind,
        require_approval=require_approval,
        ca_claims=ca_claims,
        actor=_ACTOR,
        webhook_url=webhook_url,
        webhook_ca_file=str(webhook_ca_file.resolve()) if webhook_ca_file else None,
        webhook_timeout=webhook_timeout or DEFAULT_WEBHOOK_TIMEOUT,
    )
    note(f"Added provisioner '{name}' (type scep, profile {profile}, challenge {kind})")
    note(f"  RA certificate: serial {provisioner.ra_certificate.serial_number:x} (RSA 2048)")
    note(f"  URL: <CA http url>/scep/{name}")
    if require_approval:
        note("  every request waits for an officer: ostiary ca requests list")
    if kind == "dynamic" and secret is not None:
        note("The MDM's secret for the challenge URL (shown once, only its hash is kept):")
        out.print(secret, markup=False, highlight=False)
        note(f"  the MDM POSTs to <CA https url>/scep/{name}/challenge with Basic auth")
    elif kind == "webhook":
        note(f"  every request is decided by {webhook_url}")
    elif secret is not None:
        err.print(
            "[bold yellow]WARNING:[/] a static challenge is one secret for every device: whoever "
            "learns it gets a certificate for any name its --allow-name patterns match. Keep "
            "it in the MDM only, prefer one-time challenges.",
            markup=True,
        )
        note("The static challenge (shown once, only its hash is kept):")
        out.print(secret, markup=False, highlight=False)
    else:
        note(f"Make a challenge with: ostiary ca scep challenge --provisioner {name} --subject CN")


GrantSubject = Annotated[
    str, typer.Option("--subject", help="The certificate's subject (CN=... or a bare CN).")
]
GrantTtl = Annotated[str, typer.Option("--ttl", help="How long it may be used (1m-30d).")]


def print_grant(made: Grant, what: str) -> None:
    """Show a one-time secret: what it grants on stderr, the secret alone on stdout."""
    note(f"{what} for {made.subject} {' '.join(made.sans)}".rstrip())
    note(f"  valid until {made.expires_at:%Y-%m-%d %H:%M:%SZ}, for one request")
    out.print(made.value, markup=False, highlight=False)


@scep_app.command("challenge")
def challenge(
    provisioner: Annotated[str, typer.Option("--provisioner", help="The scep provisioner.")],
    subject: GrantSubject,
    san: Sans = None,
    ttl: GrantTtl = "1h",
    directory: CADir = None,
) -> None:
    """Make a one-time challenge bound to a subject and SANs; prints it on stdout.

    Needs the CA's database, not its password: hand it to the device or its MDM profile.
    """
    from ostiary.provisioners.scep import make_challenge

    with open_ca_store(directory) as ca:
        made = make_challenge(
            ca.store, provisioner, subject=subject, sans=tuple(san or ()),
            ttl=parse_duration(ttl), now=datetime.now(UTC), actor=_ACTOR,
        )  # fmt: skip
    print_grant(made, "One-time challenge")
