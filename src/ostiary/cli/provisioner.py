"""``ostiary ca provisioner ...``: add, list, remove, rotate, update.

Provisioners say who may get which certificate (``add``, ``list``, ``remove`` here;
``update`` in :mod:`ostiary.cli.provisioner_update`, the options of both in
:mod:`ostiary.cli.provisioner_options`); ``ca token`` (:mod:`ostiary.cli.tokens`) mints a
one-time token from one. Every change is audited. Registered on the ``ca``
group at the end of :mod:`ostiary.cli.ca`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ostiary.authority.folder import (
    CAPaths,
)
from ostiary.cli import provisioner_options as opt
from ostiary.cli.acme import ACME_TYPE, add_acme
from ostiary.cli.attest import ATTEST_TYPE, add_attest, check_attest_provisioner
from ostiary.cli.console import note, out, print_table, shown
from ostiary.cli.est import add_est
from ostiary.cli.oidc import add_oidc
from ostiary.cli.options import CADir, PasswordFile
from ostiary.cli.provisioner_update import update
from ostiary.cli.scep import (
    Challenge,
    RequireApproval,
    WebhookCaFile,
    WebhookTimeout,
    WebhookUrl,
    add_scep,
)
from ostiary.cli.unlock import NoPasswordFile, UnlockedCA, ca_paths, open_ca_store, unlock_ca
from ostiary.core.errors import BadRequest
from ostiary.core.lifetime import Lifetime, format_duration, parse_duration
from ostiary.provisioners import (
    JWK_TYPE,
    LEAF_PROFILES,
    CAIdentity,
    ProvisionerClaims,
    ProvisionerInfo,
    add_jwk_provisioner,
    list_provisioners,
    remove_provisioner,
)
from ostiary.provisioners.approval import APPROVAL_TYPE, add_approval_provisioner
from ostiary.provisioners.base import DEFAULT_RENEW_AFTER_EXPIRY_WINDOW, OIDC_TYPE
from ostiary.provisioners.est import EST_TYPE
from ostiary.provisioners.manage import rotate_jwk_key
from ostiary.provisioners.scep import SCEP_TYPE
from ostiary.store import Store

provisioner_app = typer.Typer(
    help="Provisioners: who may get which certificate (one-time tokens, admin tokens).",
    no_args_is_help=True,
)

_ACTOR = "cli"
_DEFAULT_WINDOW = format_duration(DEFAULT_RENEW_AFTER_EXPIRY_WINDOW)


def _identity(ca: UnlockedCA) -> CAIdentity:
    material = ca.material
    return CAIdentity.from_certificates(
        material.root, material.intermediate, claims=material.config.claims
    )


def _paths(directory: Path | None) -> CAPaths:
    paths = ca_paths(directory)
    if not paths.exists():
        raise BadRequest(f"no CA in {paths.root}: run 'ostiary ca init' first (or give --dir)")
    return paths


def _now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- provisioner


@provisioner_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The provisioner's name (the tokens' 'iss').")],
    type_: Annotated[
        str,
        typer.Option(
            "--type",
            help="jwk (one-time tokens from 'ca token'), oidc (sign in with an identity "
            "provider), approval (an officer decides), attest (a TPM attests the key), "
            "acme (RFC 8555 clients such as certbot and lego), scep (devices and MDMs, "
            "docs/mdm.md) or est (RFC 7030: network gear and IoT, docs/mdm.md).",
        ),
    ] = JWK_TYPE,
    admin: opt.Admin = False,
    min_lifetime: opt.Duration = None,
    default_lifetime: opt.Duration = None,
    max_lifetime: opt.Duration = None,
    allow_renewal: opt.AllowRenewal = None,
    allow_renewal_after_expiry: opt.AllowRenewalAfterExpiry = None,
    renew_after_expiry_window: opt.RenewWindow = _DEFAULT_WINDOW,
    allow_name: opt.AllowName = None,
    profile: opt.Profile = None,
    require_code: opt.RequireCode = True,
    allow_officer_names: opt.AllowOfficerNames = False,
    configuration_endpoint: opt.ConfigurationEndpoint = None,
    no_check: opt.NoCheck = False,
    client_id: opt.ClientId = None,
    client_secret_file: opt.ClientSecretFile = None,
    tenant_id: opt.TenantId = None,
    domains: opt.Domains = None,
    admins: opt.Admins = None,
    upn_from_preferred_username: opt.UpnFromPreferredUsername = False,
    groups: opt.Groups = None,
    uri_claim: opt.UriClaim = None,
    policy_oid: opt.PolicyOid = None,
    provider_ca_file: opt.ProviderCaFile = None,
    attestation_roots: opt.AttestationRoots = None,
    require_pin: opt.RequirePin = True,
    require_attestation: opt.RequireAttestation = None,
    challenges: opt.AcmeChallenges = None,
    acme_profiles: opt.AcmeProfiles = None,
    default_profile: opt.AcmeDefaultProfile = None,
    attestation_formats: opt.AttestationFormats = None,
    orders_per_hour: opt.OrdersPerHour = None,
    max_pending_authorizations: opt.MaxPendingAuthorizations = None,
    require_eab: opt.RequireEab = None,
    challenge: Challenge = None,
    require_approval: RequireApproval = False,
    webhook_url: WebhookUrl = None,
    webhook_ca_file: WebhookCaFile = None,
    webhook_timeout: WebhookTimeout = None,
    directory: CADir = None,
    password_file: PasswordFile = None,
) -> None:
    """Add a provisioner: a new key pair whose private half is sealed with the CA password."""
    types = (JWK_TYPE, APPROVAL_TYPE, OIDC_TYPE, ATTEST_TYPE, ACME_TYPE, SCEP_TYPE, EST_TYPE)
    if type_ not in types:
        raise BadRequest(
            f"unknown provisioner type {type_!r}: use {JWK_TYPE!r}, 'approval', 'oidc', "
            f"{ATTEST_TYPE!r}, {ACME_TYPE!r}, {SCEP_TYPE!r} or {EST_TYPE!r}"
        )
    scep_only = (challenge, webhook_url, webhook_ca_file, webhook_timeout)
    if type_ != SCEP_TYPE and (any(v is not None for v in scep_only) or require_approval):
        raise BadRequest(
            "--challenge, --webhook-url, --webhook-ca-file, --webhook-timeout and "
            "--require-approval are for scep provisioners"
        )
    if type_ in (ATTEST_TYPE, ACME_TYPE, SCEP_TYPE, EST_TYPE) and require_attestation is not None:
        raise BadRequest("--require-attestation is for jwk, oidc and approval provisioners")
    acme_only = (
        challenges,
        acme_profiles,
        default_profile,
        attestation_formats,
        orders_per_hour,
        max_pending_authorizations,
        require_eab,
    )
    if type_ != ACME_TYPE and any(v is not None for v in acme_only):
        raise BadRequest(
            "--challenges, --profiles, --default-profile, --attestation-formats, "
            "--orders-per-hour, --max-pending-authorizations and --require-eab are for acme "
            "provisioners"
        )
    minimum = parse_duration(min_lifetime) if min_lifetime else None
    default = parse_duration(default_lifetime) if default_lifetime else None
    maximum = parse_duration(max_lifetime) if max_lifetime else None
    window = parse_duration(
        renew_after_expiry_window or format_duration(DEFAULT_RENEW_AFTER_EXPIRY_WINDOW)
    )
    profiles = tuple(profile or LEAF_PROFILES)
    with unlock_ca(directory, password_file) as ca:
        if require_attestation is not None:
            check_attest_provisioner(ca.store, require_attestation)
        ca_claims = ProvisionerClaims.from_ca_claims(ca.material.config.claims)
        claims = ProvisionerClaims(
            lifetime=_lifetime(ca_claims.lifetime, minimum, default, maximum),
            allow_renewal=ca_claims.allow_renewal if allow_renewal is None else allow_renewal,
            allow_renewal_after_expiry=(
                ca_claims.allow_renewal_after_expiry
                if allow_renewal_after_expiry is None
                else allow_renewal_after_expiry
            ),
            renew_after_expiry_window=window,
            allowed_names=tuple(allow_name or ()),
        )
        if type_ == ACME_TYPE:  # RFC 8555 clients (docs/acme.md)
            add_acme(
                ca.store,
                name,
                claims=claims,
                ca_claims=ca_claims,
                challenges=challenges,
                profiles=acme_profiles,
                default_profile=default_profile,
                attestation_roots=attestation_roots,
                attestation_formats=attestation_formats,
                orders_per_hour=orders_per_hour,
                max_pending_authorizations=max_pending_authorizations,
                require_eab=bool(require_eab),
                policy_oids=policy_oid,
                now=_now(),
                actor=_ACTOR,
            )
            return
        if type_ == SCEP_TYPE:  # devices and MDMs enroll with SCEP (docs/mdm.md)
            add_scep(
                ca,
                name,
                claims=claims,
                ca_claims=ca_claims,
                profile=profiles[0],
                challenge=challenge,
                require_approval=require_approval,
                webhook_url=webhook_url,
                webhook_ca_file=webhook_ca_file,
                webhook_timeout=webhook_timeout,
            )
            return
        if type_ == EST_TYPE:  # RFC 7030 clients: network gear, IoT (docs/mdm.md)
            add_est(ca.store, name, claims=claims, ca_claims=ca_claims, profile=profiles[0])
            return
        if type_ == ATTEST_TYPE:  # a TPM attests the key (docs/tpm.md)
            add_attest(
                ca.store,
                name,
                claims=claims,
                ca_claims=ca_claims,
                profile=profiles[0],
                roots_file=attestation_roots,
                policy_oids=policy_oid,
                require_pin=require_pin is not False,
                now=_now(),
                actor=_ACTOR,
            )
            return
        if type_ == OIDC_TYPE:  # sign in with an OpenID provider (docs/entra.md)
            add_oidc(
                ca.store,
                name,
                claims=claims,
                ca_claims=ca_claims,
                now=_now(),
                actor=_ACTOR,
                profiles=profiles,
                profile_given=bool(profile),
                configuration_endpoint=configuration_endpoint,
                client_id=client_id,
                client_secret_file=client_secret_file,
                tenant_id=tenant_id,
                domains=domains,
                admins=admins,
                upn_from_preferred_username=upn_from_preferred_username,
                groups=groups,
                uri_claim=uri_claim,
                provider_ca_file=provider_ca_file,
                policy_oids=policy_oid,
                check=not no_check,
            )
            _require_attestation(ca.store, name, require_attestation)
            return
        if type_ == APPROVAL_TYPE:  # an officer decides each request (docs/console.md)
            add_approval_provisioner(
                ca.store,
                name,
                claims=claims,
                now=_now(),
                profile=profiles[0],
                require_code=require_code is not False,
                ca_claims=ca_claims,
                actor=_ACTOR,
                allow_officer_names=bool(allow_officer_names),
            )
            note(f"Added provisioner '{name}' (type {APPROVAL_TYPE}, profile {profiles[0]})")
            _require_attestation(ca.store, name, require_attestation)
            return
        provisioner = add_jwk_provisioner(
            ca.store,
            name,
            password=ca.password,
            claims=claims,
            now=_now(),
            admin=bool(admin),
            profiles=profiles,
            ca_claims=ca_claims,
            actor=_ACTOR,
        )
        _require_attestation(ca.store, name, require_attestation)
    note(f"Added {'admin ' if admin else ''}provisioner '{name}' (type {JWK_TYPE})")
    note(f"  key id (RFC 7638): {provisioner.kid}")
    note(f"  lifetime: {_describe_lifetime(claims.lifetime)}")
    if claims.allowed_names:
        note(f"  allowed names: {', '.join(claims.allowed_names)}")
    note(f"Make a token with: ostiary ca token SUBJECT --provisioner {name}")


def _require_attestation(store: Store, name: str, attest: str | None) -> None:
    if attest is None:
        return
    from ostiary.provisioners.attest import require_attestation

    require_attestation(store, name, attest, now=_now(), actor=_ACTOR)
    note(f"  requires a TPM attestation checked by '{attest}'")


def _lifetime(
    ca: Lifetime,
    minimum: timedelta | None,
    default: timedelta | None,
    maximum: timedelta | None,
) -> Lifetime:
    """The given bounds, the rest from the CA's claims, moved inside the given ones."""
    upper = maximum or ca.maximum
    lower = minimum or min(ca.minimum, upper)
    middle = default or min(max(ca.default, lower), upper)
    return Lifetime(lower, middle, upper)


def _describe_lifetime(lifetime: Lifetime) -> str:
    return (
        f"min {format_duration(lifetime.minimum)}, default {format_duration(lifetime.default)}, "
        f"max {format_duration(lifetime.maximum)}"
    )


@provisioner_app.command("list")
def list_command(
    format_: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    directory: CADir = None,
    password_file: NoPasswordFile = None,
) -> None:
    """List the provisioners (reads the database only: no key, no password)."""
    if format_ not in ("table", "json"):
        raise BadRequest(f"unknown format {format_!r}: use table or json")
    with open_ca_store(directory) as ca:
        provisioners = list_provisioners(ca.store)
    if format_ == "json":
        out.print_json(json.dumps([_as_json(p) for p in provisioners]))
        return
    if not provisioners:
        note("No provisioners yet: add one with 'ostiary ca provisioner add NAME --type jwk'")
        return
    table = Table("name", "type", "admin", "profiles", "lifetime", "renewal", "allowed names")
    table.columns[0].no_wrap = True  # the name is what 'ca token --provisioner' takes
    for p in provisioners:
        renewal = "no"
        if p.claims.allow_renewal:
            renewal = "yes"
            if p.claims.allow_renewal_after_expiry:
                window = format_duration(p.claims.renew_after_expiry_window)
                renewal += f", {window} after expiry"
        table.add_row(
            shown(p.name),
            shown(p.type),
            "yes" if p.admin else "",
            shown(", ".join(p.profiles)),
            _describe_lifetime(p.claims.lifetime),
            renewal,
            "\n".join(shown(n) for n in p.claims.allowed_names) or "any",
        )
    print_table(table)


def _as_json(info: ProvisionerInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "type": info.type,
        "admin": info.admin,
        "profiles": list(info.profiles),
        "kid": info.key_id,
        "claims": info.claims.to_config(),
        "created_at": info.created_at.isoformat(),
    }


@provisioner_app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="The provisioner to remove.")],
    directory: CADir = None,
    password_file: PasswordFile = None,
) -> None:
    """Remove a provisioner: its tokens stop working, its certificates can no longer renew."""
    from ostiary.cli.ca import open_authority

    with open_authority(directory, password_file) as authority:
        remove_provisioner(authority.store, name, now=_now(), actor=_ACTOR)
    note(f"Removed provisioner '{name}'")


@provisioner_app.command("rotate")
def rotate(
    name: Annotated[str, typer.Argument(help="The jwk provisioner whose key to replace.")],
    directory: CADir = None,
    password_file: PasswordFile = None,
) -> None:
    """Give a jwk provisioner a new key: tokens made with the old one stop working."""
    with unlock_ca(directory, password_file) as ca:
        fresh = rotate_jwk_key(ca.store, name, password=ca.password, now=_now(), actor=_ACTOR)
    note(f"Provisioner '{name}' has a new key ({fresh.kid}); tokens of the old one are refused")


provisioner_app.command("update")(update)
