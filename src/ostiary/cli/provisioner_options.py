"""The options of ``ca provisioner add`` and ``ca provisioner update``, defined once.

``add`` gives them defaults; ``update`` leaves each one None (the setting stays as it is).
Grouped as the types use them: the claims every type has, then ``jwk``/``approval``,
``oidc`` and ``attest`` settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

# --------------------------------------------------------------------------- every type

Duration = Annotated[
    str | None,
    typer.Option(help="A duration: 15m, 24h, 7d (default: the CA's claims).", show_default=False),
]
AllowRenewal = Annotated[
    bool | None,
    typer.Option(
        "--allow-renewal/--no-allow-renewal",
        help="Holders may renew (default: the CA's claims).",
        show_default=False,
    ),
]
AllowRenewalAfterExpiry = Annotated[
    bool | None,
    typer.Option(
        "--allow-renewal-after-expiry/--no-allow-renewal-after-expiry",
        help="Expired certificates may still be renewed, within the window.",
        show_default=False,
    ),
]
RenewWindow = Annotated[
    str | None,
    typer.Option(help="How long after expiry renewal is still allowed, when it is."),
]
AllowName = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-name",
        "--names",
        help="Names its tokens (acme: its orders) may carry, as glob patterns: '*.lab.example', "
        "'*@example.com', 'upn:*@corp.example', 'cn:*'. Repeatable; default: any.",
        show_default=False,
    ),
]
Profile = Annotated[
    list[str] | None,
    typer.Option(
        "--profile",
        help="Profiles its tokens may ask for (client, user, server, device); the first is "
        "the default. Repeatable; default: all four, client first.",
        show_default=False,
    ),
]
RequireAttestation = Annotated[
    str | None,
    typer.Option(
        "--require-attestation",
        help="Any type: requests must carry a TPM attestation checked by this attest "
        "provisioner (its policy OID is added).",
        show_default=False,
    ),
]

# --------------------------------------------------------------------------- jwk, approval

Admin = Annotated[
    bool | None,
    typer.Option(
        "--admin/--no-admin",
        help="jwk: it may also mint admin tokens (API, console).",
        show_default=False,
    ),
]
RequireCode = Annotated[
    bool | None,
    typer.Option(
        "--require-code/--no-require-code",
        help="approval: the officer must enter the code shown to the requester (default).",
        show_default=False,
    ),
]

AllowOfficerNames = Annotated[
    bool | None,
    typer.Option(
        "--allow-officer-names/--no-allow-officer-names",
        help="approval: accept requests that name an officer (refused by default).",
        show_default=False,
    ),
]

# --------------------------------------------------------------------------- oidc

ConfigurationEndpoint = Annotated[
    str | None,
    typer.Option(help="oidc: the provider's discovery URL (.well-known/openid-configuration)."),
]
NoCheck = Annotated[
    bool,
    typer.Option(
        "--no-check",
        help="oidc: do not fetch the discovery document now (add a provider that is offline).",
    ),
]
ClientId = Annotated[
    str | None, typer.Option(help="oidc: the app's client id.", show_default=False)
]
ClientSecretFile = Annotated[
    Path | None,
    typer.Option(
        help="oidc: file holding the client secret (a confidential app).", show_default=False
    ),
]
TenantId = Annotated[
    str | None,
    typer.Option(help="oidc: Entra tenant id ('tid') tokens must carry.", show_default=False),
]
Domains = Annotated[
    list[str] | None,
    typer.Option("--domains", help="oidc: e-mail/UPN domains served (d1,d2).", show_default=False),
]
Admins = Annotated[
    list[str] | None,
    typer.Option(
        "--admins",
        help="oidc: admins, who may ask for other names and sign in to the console: "
        "sub:<sub>, oid:<Entra object id> or a verified e-mail (a,b,...).",
        show_default=False,
    ),
]
UpnFromPreferredUsername = Annotated[
    bool,
    typer.Option(
        "--upn-from-preferred-username",
        help="oidc: take the UPN SAN from 'preferred_username' when there is no 'upn' "
        "claim (off: Entra documents it as mutable; see docs/entra.md).",
    ),
]
Groups = Annotated[
    list[str] | None,
    typer.Option(
        "--groups", help="oidc: users must be in one of these groups (g1,...).", show_default=False
    ),
]
UriClaim = Annotated[
    str | None,
    typer.Option(help="oidc: also a URI SAN from this claim (sub or oid).", show_default=False),
]
PolicyOid = Annotated[
    list[str] | None,
    typer.Option(
        "--policy-oid",
        help="oidc: certificate policy OIDs for its certificates (Entra binding rules); "
        "attest: the one OID its certificates carry.",
        show_default=False,
    ),
]
ProviderCaFile = Annotated[
    Path | None,
    typer.Option(
        "--provider-ca-file",
        help="oidc: PEM roots for the provider (default: system store).",
        show_default=False,
    ),
]

# --------------------------------------------------------------------------- attest

AttestationRoots = Annotated[
    Path | None,
    typer.Option(
        "--attestation-roots",
        help="attest: PEM roots that certify TPM attestation keys (docs/tpm.md).",
        show_default=False,
    ),
]
RequirePin = Annotated[
    bool | None,
    typer.Option(
        "--require-pin/--no-require-pin",
        help="attest: the key must allow a PIN (userWithAuth; no TPM attests one is set).",
        show_default=False,
    ),
]
AcmeChallenges = Annotated[
    str | None,
    typer.Option(
        "--challenges",
        help="acme: challenge types, comma-separated (http-01, dns-01, tls-alpn-01, "
        "device-attest-01); default: http-01,dns-01,tls-alpn-01.",
        show_default=False,
    ),
]
AcmeProfiles = Annotated[
    str | None,
    typer.Option(
        "--profiles",
        help="acme: profiles an order may name, comma-separated (client, server, device); "
        "default: server.",
        show_default=False,
    ),
]
AcmeDefaultProfile = Annotated[
    str | None,
    typer.Option(
        "--default-profile",
        help="acme: the profile of an order that names none (default: the first of --profiles).",
        show_default=False,
    ),
]
AttestationFormats = Annotated[
    str | None,
    typer.Option(
        "--attestation-formats",
        help="acme: device-attest-01 formats, comma-separated (tpm, apple); default: both.",
        show_default=False,
    ),
]
OrdersPerHour = Annotated[
    int | None,
    typer.Option(
        "--orders-per-hour",
        min=1,
        max=100_000,
        help="acme: new orders one account may place in an hour (default 300).",
        show_default=False,
    ),
]
RequireEab = Annotated[
    bool | None,
    typer.Option(
        "--require-eab",
        help="acme: newAccount must carry an External Account Binding ('ostiary ca acme eab add').",
        show_default=False,
    ),
]
MaxPendingAuthorizations = Annotated[
    int | None,
    typer.Option(
        "--max-pending-authorizations",
        min=1,
        max=100_000,
        help="acme: pending authorizations one account may hold (default 300).",
        show_default=False,
    ),
]
