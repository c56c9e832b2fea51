"""``ostiary ca token``: a one-time enrollment token (or an admin token) from a provisioner.

The token is printed alone on stdout, for scripts. The provisioner is the one named by
``--provisioner``, or, when the CA has exactly one that issues tokens (a ``jwk`` one; an
admin one for ``--admin``), that one. The provisioner is chosen, and every check that needs
no key is made, before the CA password is asked for. Registered on the ``ca`` group at the
end of :mod:`ostiary.cli.ca`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from ostiary.cli.options import CADir, PasswordFile, Sans
from ostiary.cli.unlock import open_ca_store, unlock_ca
from ostiary.core.errors import BadRequest, NotFound
from ostiary.core.lifetime import format_duration, parse_duration
from ostiary.provisioners import (
    JWK_TYPE,
    TOKEN_TTL,
    CAIdentity,
    ProvisionerInfo,
    list_provisioners,
    mint_admin_token,
    mint_sign_token,
)

_ACTOR = "cli"


def token(
    subject: Annotated[
        str | None,
        typer.Argument(help="Subject: a common name or 'CN=..,O=..' (not with --admin)."),
    ] = None,
    provisioner: Annotated[
        str | None,
        typer.Option(
            "--provisioner",
            help="The provisioner that signs the token (default: the only one that issues "
            "tokens, i.e. of type jwk; with --admin, the only admin one).",
            show_default=False,
        ),
    ] = None,
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
            "with this token may ask for; refused now if the provisioner's maximum is shorter.",
        ),
    ] = None,
    ttl: Annotated[
        str, typer.Option("--ttl", help="How long the token itself is valid (at most 1h).")
    ] = format_duration(TOKEN_TTL),
    admin: Annotated[
        bool, typer.Option("--admin", help="An admin token (for the API and the console).")
    ] = False,
    ssh: Annotated[
        bool,
        typer.Option(
            "--ssh", help="An SSH certificate token (docs/ssh.md); SUBJECT is the key id."
        ),
    ] = False,
    principal: Annotated[
        list[str] | None,
        typer.Option("--principal", help="With --ssh: a principal (repeatable)."),
    ] = None,
    host: Annotated[
        bool, typer.Option("--host", help="With --ssh: a host certificate token.")
    ] = False,
    directory: CADir = None,
    password_file: PasswordFile = None,
) -> None:
    """Print a one-time token (alone on stdout) that authorizes exactly these names.

    Without --san, a subject that is an e-mail address, IP address or dotted DNS name is
    also the one SAN.
    """
    lifetime = parse_duration(ttl)
    if ssh:
        if admin or san or profile or not_after:
            raise BadRequest("an SSH token has no --admin, --san, --profile or --not-after")
        if not principal:
            raise BadRequest("an SSH token names its principals: give --principal")
    elif principal or host:
        raise BadRequest("--principal and --host go with --ssh")
    elif admin:
        if subject is not None or san or profile or not_after:
            raise BadRequest("an admin token has no SUBJECT, --san, --profile or --not-after")
    elif subject is None:
        raise BadRequest("give the SUBJECT of the certificate (or --admin)")
    with open_ca_store(directory) as opened:
        store = opened.store
        name = choose_provisioner(list_provisioners(store), provisioner, admin=admin)
    now = datetime.now(UTC)
    with unlock_ca(directory, password_file) as ca:
        identity = CAIdentity.from_certificates(
            ca.material.root, ca.material.intermediate, claims=ca.material.config.claims
        )
        if ssh:
            from ostiary.provisioners.ssh import mint_ssh_token

            value = mint_ssh_token(
                ca.store,
                name,
                tuple(principal or ()),
                host=host,
                ca=identity,
                password=ca.password,
                now=now,
                key_id=subject,
                ttl=lifetime,
                actor=_ACTOR,
            )
        elif admin:
            value = mint_admin_token(
                ca.store,
                name,
                ca=identity,
                password=ca.password,
                now=now,
                ttl=lifetime,
                actor=_ACTOR,
            )
        else:
            value = mint_sign_token(
                ca.store,
                name,
                subject or "",
                ca=identity,
                password=ca.password,
                now=now,
                sans=tuple(san or ()),
                profile=profile,
                not_after=not_after,
                ttl=lifetime,
                actor=_ACTOR,
            )
    typer.echo(value)


def choose_provisioner(
    provisioners: list[ProvisionerInfo], name: str | None, *, admin: bool
) -> str:
    """The provisioner to mint with: ``name`` if it can, else the only one that can.

    A name that does not exist, or one that does not issue this kind of token, is refused
    with the names that would do.
    """
    kind = "admin tokens" if admin else "tokens"
    able = [p.name for p in provisioners if p.type == JWK_TYPE and (p.admin or not admin)]
    listed = ", ".join(able) if able else "none"
    if name is not None:
        found = next((p for p in provisioners if p.name == name), None)
        if found is None:
            raise NotFound(
                f"no provisioner {name!r}; the ones that issue {kind}: {listed}", name=name
            )
        if found.name not in able:
            what = (
                "is not an admin provisioner"
                if found.type == JWK_TYPE
                else (f"is of type {found.type!r}, which issues no tokens")
            )
            raise BadRequest(f"provisioner {name!r} {what}; the ones that issue {kind}: {listed}")
        return name
    if len(able) == 1:
        return able[0]
    if not able:
        hint = " --admin" if admin else ""
        raise BadRequest(
            f"no provisioner issues {kind}: add one with "
            f"'ostiary ca provisioner add NAME --type jwk{hint}'"
        )
    raise BadRequest(f"several provisioners issue {kind} ({listed}): name one with --provisioner")


__all__ = ["choose_provisioner", "token"]
