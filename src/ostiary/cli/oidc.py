"""The command line's OpenID Connect parts: ``ca provisioner add --type oidc`` and the
sign-in of ``cert request --provisioner NAME`` (see :mod:`ostiary.client.oidc`).

Called from :mod:`ostiary.cli.provisioner` and :mod:`ostiary.cli.request`, which keep the
options; this module holds what is particular to OIDC.
"""

from __future__ import annotations

import sys
import webbrowser
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ostiary.cli.console import note
from ostiary.client.oidc import SIGN_IN_TIMEOUT, OIDCSignIn
from ostiary.core.errors import BadRequest
from ostiary.provisioners.base import OIDC_TYPE, ProvisionerClaims

if TYPE_CHECKING:
    from ostiary.provisioners.oidc import OIDCProvisioner
    from ostiary.store import Store


def split_list(values: Sequence[str] | None) -> tuple[str, ...]:
    """``--domains a,b --domains c`` -> ``(a, b, c)``."""
    found: list[str] = []
    for value in values or ():
        found += [part.strip() for part in value.split(",") if part.strip()]
    return tuple(dict.fromkeys(found))


def add_oidc(
    store: Store,
    name: str,
    *,
    claims: ProvisionerClaims,
    ca_claims: ProvisionerClaims,
    now: datetime,
    actor: str,
    profiles: Sequence[str],
    profile_given: bool,
    configuration_endpoint: str | None,
    client_id: str | None,
    client_secret_file: Path | None,
    tenant_id: str | None,
    domains: Sequence[str] | None,
    admins: Sequence[str] | None,
    groups: Sequence[str] | None,
    uri_claim: str | None,
    provider_ca_file: Path | None,
    policy_oids: Sequence[str] | None = None,
    upn_from_preferred_username: bool = False,
    check: bool = True,
) -> None:
    """Add an ``oidc`` provisioner from the command's options and say what was made.

    With ``check`` the discovery document is fetched now and its issuer checked.
    """
    # The CA side is imported here: ``sign_in_for`` (on devices) must not pull in the store.
    from ostiary.provisioners.oidc import OIDC_PROFILES, OIDCProvisioner, add_oidc_provisioner

    if not configuration_endpoint or not client_id:
        raise BadRequest("--type oidc needs --configuration-endpoint URL and --client-id ID")
    profile = profiles[0] if profile_given else "user"
    if profile not in OIDC_PROFILES:
        raise BadRequest(f"an oidc provisioner hands out profile user or client, not {profile!r}")
    for path, what in ((client_secret_file, "--client-secret-file"), (provider_ca_file, "--ca")):
        if path is not None and not path.is_file():
            raise BadRequest(f"{what}: no such file {str(path)!r}")
    provisioner = OIDCProvisioner(
        name=name,
        configuration_endpoint=configuration_endpoint,
        client_id=client_id,
        claims=claims,
        client_secret_file=str(client_secret_file.resolve()) if client_secret_file else None,
        tenant_id=tenant_id,
        domains=split_list(domains),
        admins=split_list(admins),
        groups=split_list(groups),
        profile=profile,
        uri_claim=uri_claim,
        provider_ca_file=str(provider_ca_file.resolve()) if provider_ca_file else None,
        policies=split_list(policy_oids),
        upn_from_preferred_username=upn_from_preferred_username,
    )
    issuer = check_provider(provisioner) if check else None
    add_oidc_provisioner(store, provisioner, now=now, ca_claims=ca_claims, actor=actor)
    note(f"Added provisioner '{name}' (type {OIDC_TYPE}, profile {profile})")
    note(f"  provider: {configuration_endpoint}")
    note(f"  issuer: {issuer}" if issuer else "  issuer: not checked (--no-check)")
    note(f"  client id: {client_id} ({'confidential' if client_secret_file else 'public'} app)")
    if provisioner.domains:
        note(f"  domains: {', '.join(provisioner.domains)}")
    if provisioner.groups:
        note(f"  groups: {', '.join(provisioner.groups)}")
    if provisioner.admins:
        note(f"  admins: {', '.join(provisioner.admins)}")
    if provisioner.upn_from_preferred_username:
        note("  UPN from preferred_username when there is no upn claim")
    if provisioner.policies:
        note(f"  certificate policies: {', '.join(provisioner.policies)}")
    note(f"Users enroll with: ostiary cert request SUBJECT CRT KEY --provisioner {name}")


def check_provider(provisioner: OIDCProvisioner) -> str:
    """Fetch the provisioner's discovery document now and check it; the issuer it names."""
    from ostiary.provisioners.oidc_discovery import check_discovery

    return check_discovery(provisioner.configuration_endpoint, ca_file=provisioner.ca_file).issuer


def sign_in_for(
    provisioner: str, *, no_browser: bool, timeout: float = SIGN_IN_TIMEOUT
) -> OIDCSignIn:
    """The sign-in credential of ``cert request --provisioner NAME`` for an oidc provisioner."""

    def announce(url: str) -> None:
        note("Open this address in a browser to sign in:")
        typer.echo(url)
        sys.stdout.flush()

    def open_browser(url: str) -> None:
        note("Opening the browser to sign in...")
        if not webbrowser.open(url):
            announce(url)

    return OIDCSignIn(
        provisioner,
        open_browser=None if no_browser else open_browser,
        announce=announce,
        timeout=timeout,
    )


__all__ = ["add_oidc", "check_provider", "sign_in_for", "split_list"]
