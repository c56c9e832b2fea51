"""``ostiary ca provisioner update NAME ...``: change a provisioner in place.

The options are those of ``add`` for the provisioner's type, each optional: what is absent
stays as it is; a list option (``--domains``, ``--admins``, ``--groups``, ``--allow-name``,
``--policy-oid``, ``--profile``) replaces the whole list, and an empty value (``--admins ''``)
empties it; ``--tenant-id ''``, ``--uri-claim ''`` and ``--require-attestation ''`` drop that
setting. The new settings are validated as at add (an ``oidc`` provisioner pointed at another
provider has its discovery document fetched and checked unless ``--no-check``); the change is
one "provisioner.updated" audit entry. The provisioner keeps its name and key (a ``scep``
provisioner its RA), so the certificates it issued renew as before: no remove and re-add,
which would refuse them. ``--new-secret`` replaces a ``scep`` provisioner's static challenge
or MDM secret and prints the new one once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives.serialization import Encoding

from ostiary.cli import provisioner_options as opt
from ostiary.cli.console import note, out
from ostiary.cli.files import read_input
from ostiary.cli.oidc import check_provider, split_list
from ostiary.cli.options import CADir, PasswordFile
from ostiary.cli.scep import WebhookCaFile, WebhookTimeout, WebhookUrl
from ostiary.cli.unlock import unlock_ca
from ostiary.core.encoding import load_certificate_chain
from ostiary.core.errors import BadRequest
from ostiary.core.lifetime import parse_duration
from ostiary.provisioners import LEAF_PROFILES, ProvisionerClaims
from ostiary.provisioners.base import OIDC_TYPE, check_profile
from ostiary.provisioners.jwk import JWK_TYPE
from ostiary.provisioners.manage import ClaimsChange, update_provisioner
from ostiary.store import ProvisionerRepository, Store

_ACTOR = "cli"


def update(
    name: Annotated[str, typer.Argument(help="The provisioner to change.")],
    admin: opt.Admin = None,
    min_lifetime: opt.Duration = None,
    default_lifetime: opt.Duration = None,
    max_lifetime: opt.Duration = None,
    allow_renewal: opt.AllowRenewal = None,
    allow_renewal_after_expiry: opt.AllowRenewalAfterExpiry = None,
    renew_after_expiry_window: opt.RenewWindow = None,
    allow_name: opt.AllowName = None,
    profile: opt.Profile = None,
    require_code: opt.RequireCode = None,
    allow_officer_names: opt.AllowOfficerNames = None,
    configuration_endpoint: opt.ConfigurationEndpoint = None,
    no_check: opt.NoCheck = False,
    client_id: opt.ClientId = None,
    client_secret_file: opt.ClientSecretFile = None,
    tenant_id: opt.TenantId = None,
    domains: opt.Domains = None,
    admins: opt.Admins = None,
    upn_from_preferred_username: Annotated[
        bool | None,
        typer.Option(
            "--upn-from-preferred-username/--no-upn-from-preferred-username",
            help="oidc: take the UPN SAN from 'preferred_username' when there is no 'upn' claim.",
            show_default=False,
        ),
    ] = None,
    groups: opt.Groups = None,
    uri_claim: opt.UriClaim = None,
    policy_oid: opt.PolicyOid = None,
    provider_ca_file: opt.ProviderCaFile = None,
    attestation_roots: opt.AttestationRoots = None,
    require_pin: opt.RequirePin = None,
    require_attestation: opt.RequireAttestation = None,
    require_approval: Annotated[
        bool | None,
        typer.Option(
            "--require-approval/--no-require-approval",
            help="scep: an officer approves each request (or no longer).",
            show_default=False,
        ),
    ] = None,
    webhook_url: WebhookUrl = None,
    webhook_ca_file: WebhookCaFile = None,
    webhook_timeout: WebhookTimeout = None,
    new_secret: Annotated[
        bool,
        typer.Option(
            "--new-secret",
            help="scep static or dynamic: replace the shared challenge or the MDM's secret "
            "(printed once on stdout; the old one stops working).",
        ),
    ] = False,
    directory: CADir = None,
    password_file: PasswordFile = None,
) -> None:
    """Change a provisioner's settings; unchanged when absent, validated as at add, audited."""
    claims = ClaimsChange(
        min_lifetime=_duration(min_lifetime),
        default_lifetime=_duration(default_lifetime),
        max_lifetime=_duration(max_lifetime),
        allow_renewal=allow_renewal,
        allow_renewal_after_expiry=allow_renewal_after_expiry,
        renew_after_expiry_window=_duration(renew_after_expiry_window),
        allowed_names=[n for n in allow_name if n.strip()] if allow_name is not None else None,
    )
    given: dict[str, Any] = {
        "admin": admin,
        "require_code": require_code,
        "allow_officer_names": allow_officer_names,
        "configuration_endpoint": configuration_endpoint,
        "client_id": client_id,
        "client_secret_file": _file(client_secret_file, "--client-secret-file"),
        "tenant_id": _text(tenant_id),
        "domains": split_list(domains) if domains is not None else None,
        "admins": split_list(admins) if admins is not None else None,
        "upn_from_preferred_username": upn_from_preferred_username,
        "groups": split_list(groups) if groups is not None else None,
        "uri_claim": _text(uri_claim),
        "provider_ca_file": _file(provider_ca_file, "--provider-ca-file"),
        "require_pin": require_pin,
        "require_approval": require_approval,
        "webhook_url": webhook_url,
        "webhook_ca_file": _file(webhook_ca_file, "--webhook-ca-file"),
        "webhook_timeout": webhook_timeout,
    }
    settings = {key: value for key, value in given.items() if value is not None}
    for key in ("tenant_id", "uri_claim"):  # '' given: drop the setting
        if given[key] == "":
            settings[key] = None
    with unlock_ca(directory, password_file) as ca:
        with ca.store.transaction(read_only=True) as session:
            kind = ProvisionerRepository(session).get(name).type
        settings.update(_typed_settings(kind, profile, policy_oid, attestation_roots))
        secret = _new_secret(ca.store, name, kind) if new_secret else None
        if secret is not None:
            settings.update(secret[1])
        nothing = not settings and claims == ClaimsChange()
        if nothing and require_attestation is None:
            raise BadRequest(f"nothing to change in provisioner {name!r}: give a new setting")
        if not nothing:
            update_provisioner(
                ca.store,
                name,
                settings=settings,
                claims=claims,
                ca_claims=ProvisionerClaims.from_ca_claims(ca.material.config.claims),
                now=datetime.now(UTC),
                actor=_ACTOR,
                check=_Check(no_check),
            )
        if require_attestation is not None:
            from ostiary.cli.attest import check_attest_provisioner
            from ostiary.provisioners.attest import require_attestation as require

            attest = require_attestation.strip() or None
            if attest is not None:
                check_attest_provisioner(ca.store, attest)
            require(ca.store, name, attest, now=datetime.now(UTC), actor=_ACTOR)
    changed = sorted({*settings, *(k for k, v in vars(claims).items() if v is not None)})
    if secret is not None:
        note("The new secret (shown once, only its hash is kept):")
        out.print(secret[0], markup=False, highlight=False)
    if require_attestation is not None:
        changed.append("require_attestation")
    note(f"Updated provisioner '{name}' (type {kind}): {', '.join(changed)}")


def _typed_settings(
    kind: str, profile: list[str] | None, policy_oid: list[str] | None, roots: Path | None
) -> dict[str, Any]:
    """The options whose setting is named or shaped differently per type."""
    settings: dict[str, Any] = {}
    if profile is not None:
        if kind == JWK_TYPE:
            settings["profiles"] = tuple(dict.fromkeys(profile))
        elif len(profile) != 1:
            raise BadRequest(f"a {kind} provisioner hands out one profile: give one --profile")
        else:
            settings["profile"] = profile[0]
    if policy_oid is not None:
        if kind == OIDC_TYPE:
            settings["policies"] = split_list(policy_oid)
        elif len(policy_oid) != 1:
            raise BadRequest(f"a {kind} provisioner has one policy OID: give one --policy-oid")
        else:
            settings["policy_oid"] = policy_oid[0]
    if roots is not None:
        chain = load_certificate_chain(read_input(roots, "attestation roots"))
        settings["roots_pem"] = b"".join(c.public_bytes(Encoding.PEM) for c in chain).decode()
    return settings


class _Check:
    """The checks ``add`` makes that the provisioner's own type does not make by itself."""

    def __init__(self, no_check: bool) -> None:
        self.no_check = no_check

    def __call__(self, old: Any, new: Any) -> None:
        if new.type == JWK_TYPE:
            if not new.profiles:
                raise BadRequest("a provisioner needs at least one profile")
            for profile in new.profiles:
                check_profile(profile, LEAF_PROFILES)
        elif new.type in ("approval", "scep", "est"):
            check_profile(new.profile, LEAF_PROFILES)
        if new.type == "scep" and new.webhook_ca_file is not None:
            from ostiary.provisioners.scep_webhook import read_webhook_roots

            read_webhook_roots(new.webhook_ca_file)
        elif new.type == OIDC_TYPE:
            self._check_oidc(old, new)

    def _check_oidc(self, old: Any, new: Any) -> None:
        from ostiary.provisioners.oidc import OIDC_PROFILES
        from ostiary.provisioners.oidc_code_exchange import read_client_secret

        check_profile(new.profile, OIDC_PROFILES)
        if new.client_secret_file is not None:
            read_client_secret(new)
        moved = (new.configuration_endpoint, new.provider_ca_file) != (
            old.configuration_endpoint,
            old.provider_ca_file,
        )
        if moved and not self.no_check:
            check_provider(new)


def _new_secret(store: Store, name: str, kind: str) -> tuple[str, dict[str, str]]:
    from ostiary.provisioners.scep import load_scep_provisioner, new_secret_settings

    if kind != "scep":
        raise BadRequest("--new-secret is for scep provisioners with a static or dynamic challenge")
    return new_secret_settings(load_scep_provisioner(store, name))


def _duration(value: str | None) -> Any:
    return parse_duration(value) if value else None


def _text(value: str | None) -> str | None:
    return None if value is None else value.strip()


def _file(path: Path | None, what: str) -> str | None:
    if path is None:
        return None
    if not path.is_file():
        raise BadRequest(f"{what}: no such file {str(path)!r}")
    return str(path.resolve())


__all__ = ["update"]
