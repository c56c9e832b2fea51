"""``ostiary ca provisioner ...``, ``ca token``, ``ca audit verify`` and ``ca migrate``.

Provisioners say who may get which certificate; ``ca token`` mints a one-time token from one
(printed alone on stdout, for scripts). Every change is audited. Registered on the ``ca``
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
    load_ca_public,
)
from ostiary.cli.attest import ATTEST_TYPE, add_attest, check_attest_provisioner
from ostiary.cli.console import fail, note, out, shown
from ostiary.cli.oidc import add_oidc
from ostiary.cli.options import CADir, PasswordFile, Sans
from ostiary.cli.unlock import NoPasswordFile, UnlockedCA, ca_paths, open_ca_store, unlock_ca
from ostiary.core.errors import BadRequest
from ostiary.core.lifetime import Lifetime, format_duration, parse_duration
from ostiary.provisioners import (
    JWK_TYPE,
    LEAF_PROFILES,
    TOKEN_TTL,
    CAIdentity,
    ProvisionerClaims,
    ProvisionerInfo,
    add_jwk_provisioner,
    list_provisioners,
    mint_admin_token,
    mint_sign_token,
    remove_provisioner,
)
from ostiary.provisioners.approval import APPROVAL_TYPE, add_approval_provisioner
from ostiary.provisioners.base import DEFAULT_RENEW_AFTER_EXPIRY_WINDOW, OIDC_TYPE
from ostiary.store import AuditLog, Store, current_revision, head_revision, migrate

provisioner_app = typer.Typer(
    help="Provisioners: who may get which certificate (one-time tokens, admin tokens).",
    no_args_is_help=True,
)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)

_ACTOR = "cli"

Duration = Annotated[
    str | None,
    typer.Option(help="A duration: 15m, 24h, 7d (default: the CA's claims).", show_default=False),
]


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
    type_: Annotated[str, typer.Option("--type", help="Provisioner type: jwk.")] = JWK_TYPE,
    admin: Annotated[
        bool, typer.Option("--admin", help="It may also mint admin tokens (API, console).")
    ] = False,
    min_lifetime: Duration = None,
    default_lifetime: Duration = None,
    max_lifetime: Duration = None,
    allow_renewal: Annotated[
        bool | None,
        typer.Option(
            "--allow-renewal/--no-allow-renewal",
            help="Holders may renew (default: the CA's claims).",
            show_default=False,
        ),
    ] = None,
    allow_renewal_after_expiry: Annotated[
        bool | None,
        typer.Option(
            "--allow-renewal-after-expiry/--no-allow-renewal-after-expiry",
            help="Expired certificates may still be renewed, within the window.",
            show_default=False,
        ),
    ] = None,
    renew_after_expiry_window: Annotated[
        str,
        typer.Option(help="How long after expiry renewal is still allowed, when it is."),
    ] = format_duration(DEFAULT_RENEW_AFTER_EXPIRY_WINDOW),
    allow_name: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-name",
            help="Names its tokens may carry, as glob patterns: '*.lab.example', "
            "'*@example.com', 'upn:*@corp.example', 'cn:*'. Repeatable; default: any.",
            show_default=False,
        ),
    ] = None,
    profile: Annotated[
        list[str] | None,
        typer.Option(
            "--profile",
            help="Profiles its tokens may ask for (client, user, server, device); the first is "
            "the default. Repeatable; default: all four, client first.",
            show_default=False,
        ),
    ] = None,
    require_code: Annotated[
        bool,
        typer.Option(
            "--require-code/--no-require-code",
            help="approval: the officer must enter the code shown to the requester.",
        ),
    ] = True,
    allow_officer_names: Annotated[
        bool,
        typer.Option(
            "--allow-officer-names",
            help="approval: accept requests that name an officer (refused by default).",
        ),
    ] = False,
    configuration_endpoint: Annotated[
        str | None,
        typer.Option(help="oidc: the provider's discovery URL (.well-known/openid-configuration)."),
    ] = None,
    client_id: Annotated[
        str | None, typer.Option(help="oidc: the app's client id.", show_default=False)
    ] = None,
    client_secret_file: Annotated[
        Path | None,
        typer.Option(
            help="oidc: file holding the client secret (a confidential app).", show_default=False
        ),
    ] = None,
    tenant_id: Annotated[
        str | None,
        typer.Option(help="oidc: Entra tenant id ('tid') tokens must carry.", show_default=False),
    ] = None,
    domains: Annotated[
        list[str] | None,
        typer.Option(
            "--domains", help="oidc: e-mail/UPN domains served (d1,d2).", show_default=False
        ),
    ] = None,
    admins: Annotated[
        list[str] | None,
        typer.Option(
            "--admins",
            help="oidc: users who may ask for other names (a@x,...).",
            show_default=False,
        ),
    ] = None,
    groups: Annotated[
        list[str] | None,
        typer.Option(
            "--groups",
            help="oidc: users must be in one of these groups (g1,...).",
            show_default=False,
        ),
    ] = None,
    uri_claim: Annotated[
        str | None,
        typer.Option(help="oidc: also a URI SAN from this claim (sub or oid).", show_default=False),
    ] = None,
    policy_oid: Annotated[
        list[str] | None,
        typer.Option(
            "--policy-oid",
            help="oidc: certificate policy OIDs for its certificates (Entra binding rules).",
            show_default=False,
        ),
    ] = None,
    provider_ca_file: Annotated[
        Path | None,
        typer.Option(
            "--provider-ca-file",
            help="oidc: PEM roots for the provider (default: system store).",
            show_default=False,
        ),
    ] = None,
    attestation_roots: Annotated[
        Path | None,
        typer.Option(
            "--attestation-roots",
            help="attest: PEM roots that certify TPM attestation keys (docs/tpm.md).",
            show_default=False,
        ),
    ] = None,
    require_pin: Annotated[
        bool,
        typer.Option(
            "--require-pin/--no-require-pin",
            help="attest: the key must allow a PIN (userWithAuth; no TPM attests one is set).",
        ),
    ] = True,
    require_attestation: Annotated[
        str | None,
        typer.Option(
            "--require-attestation",
            help="Any type: requests must carry a TPM attestation checked by this attest "
            "provisioner (its policy OID is added).",
            show_default=False,
        ),
    ] = None,
    directory: CADir = None,
    password_file: PasswordFile = None,
) -> None:
    """Add a provisioner: a new key pair whose private half is sealed with the CA password."""
    if type_ not in (JWK_TYPE, APPROVAL_TYPE, OIDC_TYPE, ATTEST_TYPE):
        raise BadRequest(
            f"unknown provisioner type {type_!r}: use {JWK_TYPE!r}, 'approval', 'oidc' or "
            f"{ATTEST_TYPE!r}"
        )
    if type_ == ATTEST_TYPE and require_attestation is not None:
        raise BadRequest("--require-attestation is for jwk, oidc and approval provisioners")
    minimum = parse_duration(min_lifetime) if min_lifetime else None
    default = parse_duration(default_lifetime) if default_lifetime else None
    maximum = parse_duration(max_lifetime) if max_lifetime else None
    window = parse_duration(renew_after_expiry_window)
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
        if type_ == ATTEST_TYPE:  # a TPM attests the key (docs/tpm.md)
            add_attest(
                ca.store,
                name,
                claims=claims,
                ca_claims=ca_claims,
                profile=profiles[0],
                roots_file=attestation_roots,
                policy_oids=policy_oid,
                require_pin=require_pin,
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
                groups=groups,
                uri_claim=uri_claim,
                provider_ca_file=provider_ca_file,
                policy_oids=policy_oid,
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
                require_code=require_code,
                ca_claims=ca_claims,
                actor=_ACTOR,
                allow_officer_names=allow_officer_names,
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
            admin=admin,
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
    out.print(table)


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


# --------------------------------------------------------------------------- token


def token(
    subject: Annotated[
        str | None,
        typer.Argument(help="Subject: a common name or 'CN=..,O=..' (not with --admin)."),
    ] = None,
    provisioner: Annotated[
        str, typer.Option("--provisioner", help="The provisioner that signs the token.")
    ] = "",
    san: Sans = None,
    profile: Annotated[
        str | None,
        typer.Option(help="client, user, server or device (default: the provisioner's)."),
    ] = None,
    not_after: Annotated[
        str | None,
        typer.Option(
            "--not-after",
            help="Certificate lifetime (24h, 7d) or an RFC 3339 time: the longest a request "
            "with this token may ask for.",
        ),
    ] = None,
    ttl: Annotated[
        str, typer.Option("--ttl", help="How long the token itself is valid (at most 1h).")
    ] = format_duration(TOKEN_TTL),
    admin: Annotated[
        bool, typer.Option("--admin", help="An admin token (for the API and the console).")
    ] = False,
    directory: CADir = None,
    password_file: PasswordFile = None,
) -> None:
    """Print a one-time token (alone on stdout) that authorizes exactly these names.

    Without --san, a subject that is an e-mail address, IP address or dotted DNS name is
    also the one SAN.
    """
    if not provisioner:
        raise BadRequest("name the provisioner with --provisioner")
    lifetime = parse_duration(ttl)
    if admin:
        if subject is not None or san or profile or not_after:
            raise BadRequest("an admin token has no SUBJECT, --san, --profile or --not-after")
    elif subject is None:
        raise BadRequest("give the SUBJECT of the certificate (or --admin)")
    with unlock_ca(directory, password_file) as ca:
        if admin:
            value = mint_admin_token(
                ca.store,
                provisioner,
                ca=_identity(ca),
                password=ca.password,
                now=_now(),
                ttl=lifetime,
                actor=_ACTOR,
            )
        else:
            value = mint_sign_token(
                ca.store,
                provisioner,
                subject or "",
                ca=_identity(ca),
                password=ca.password,
                now=_now(),
                sans=tuple(san or ()),
                profile=profile,
                not_after=not_after,
                ttl=lifetime,
                actor=_ACTOR,
            )
    typer.echo(value)


# --------------------------------------------------------------------------- audit, migrate


_NoPassword = Annotated[
    Path | None,
    typer.Option(
        "--password-file",
        help="Accepted for uniform scripts; not needed (no key is used).",
        hidden=True,
    ),
]


@audit_app.command("verify")
def audit_verify(directory: CADir = None, password_file: _NoPassword = None) -> None:
    """Check the audit log's hash chain; exit 1 at the first damaged entry."""
    paths = _paths(directory)
    config, _, _ = load_ca_public(paths)
    store = Store.from_url(paths.database_url(config))
    try:
        if current_revision(store.engine) != head_revision():
            raise BadRequest("the database schema is not up to date: run 'ostiary ca migrate'")
        with store.transaction(read_only=True) as session:
            result = AuditLog(session).verify()
    finally:
        store.dispose()
    if result.ok:
        out.print(f"OK: {result.checked} audit entries, hash chain intact")
        return
    where = f"entry {result.first_bad_id}" if result.first_bad_id is not None else "its end"
    reason = result.reason.value if result.reason is not None else "damaged"
    fail(
        f"the audit log is damaged at {where}: {reason}; "
        f"the {result.checked} entries before it are sound"
    )


def migrate_database(directory: CADir = None, password_file: _NoPassword = None) -> None:
    """Bring the CA's database schema up to date (safe to run on every start)."""
    paths = _paths(directory)
    config, _, _ = load_ca_public(paths)
    migrate(paths.database_url(config))
    note(f"Database schema at revision {head_revision()}")
