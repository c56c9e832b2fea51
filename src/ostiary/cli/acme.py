"""The CLI side of ``acme`` provisioners (``ca provisioner add --type acme``)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from cryptography.hazmat.primitives.serialization import Encoding

from ostiary.cli.acme_keys import eab_app, renew_early
from ostiary.cli.console import note
from ostiary.cli.files import read_input
from ostiary.core.encoding import load_certificate_chain
from ostiary.core.errors import BadRequest

if TYPE_CHECKING:
    from ostiary.provisioners.base import ProvisionerClaims
    from ostiary.store import Store

#: The provisioner type (as :data:`ostiary.provisioners.acme.ACME_TYPE`, without the import).
ACME_TYPE = "acme"


def _split(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(part.strip() for part in value.split(",") if part.strip())


def add_acme(
    store: Store,
    name: str,
    *,
    claims: ProvisionerClaims,
    ca_claims: ProvisionerClaims,
    challenges: str | None,
    profiles: str | None,
    default_profile: str | None,
    attestation_roots: Path | None,
    attestation_formats: str | None,
    orders_per_hour: int | None,
    max_pending_authorizations: int | None,
    require_eab: bool,
    policy_oids: list[str] | None,
    now: datetime,
    actor: str,
) -> None:
    """Record an ``acme`` provisioner from the CLI's options and say where its directory is."""
    from ostiary.provisioners.acme import (
        ATTESTATION_FORMATS,
        DEFAULT_CHALLENGES,
        DEFAULT_ORDERS_PER_HOUR,
        DEFAULT_PENDING_AUTHORIZATIONS,
        AcmeProvisioner,
        add_acme_provisioner,
    )

    if policy_oids is not None and len(policy_oids) != 1:
        raise BadRequest("an acme provisioner has one --policy-oid (for attested hardware keys)")
    roots_pem = None
    if attestation_roots is not None:
        roots = load_certificate_chain(read_input(attestation_roots, "attestation roots"))
        roots_pem = b"".join(c.public_bytes(Encoding.PEM) for c in roots).decode("ascii")
    chosen_profiles = _split(profiles) or ("server",)
    provisioner = AcmeProvisioner(
        name=name,
        claims=claims,
        challenges=_split(challenges) or DEFAULT_CHALLENGES,
        profiles=chosen_profiles,
        default_profile=default_profile or chosen_profiles[0],
        attestation_roots=roots_pem,
        attestation_formats=_split(attestation_formats) or ATTESTATION_FORMATS,
        policy_oid=policy_oids[0] if policy_oids else None,
        orders_per_hour=orders_per_hour or DEFAULT_ORDERS_PER_HOUR,
        max_pending_authorizations=max_pending_authorizations or DEFAULT_PENDING_AUTHORIZATIONS,
        require_eab=require_eab,
    )
    add_acme_provisioner(store, provisioner, now=now, ca_claims=ca_claims, actor=actor)
    note(f"Added provisioner '{name}' (type {ACME_TYPE})")
    note(f"  challenges: {', '.join(provisioner.challenges)}")
    note(f"  profiles: {', '.join(provisioner.profiles)} (default {provisioner.default_profile})")
    note(
        f"  limits: {provisioner.orders_per_hour} orders per account per hour, "
        f"{provisioner.max_pending_authorizations} pending authorizations per account"
    )
    if claims.allowed_names:
        note(f"  names: {', '.join(claims.allowed_names)}")
    if require_eab:
        note(f"  accounts need an EAB key: ostiary ca acme eab add --provisioner {name}")
    note(f"  directory: https://<ca server>/acme/{name}/directory")


acme_app = typer.Typer(
    help="ACME: External Account Binding keys, renewal windows, one-time client identifiers.",
    no_args_is_help=True,
)
acme_app.add_typer(eab_app, name="eab")
acme_app.command("renew-early")(renew_early)
