"""``ostiary ca ssh ...``: the SSH CA keys, the SSH policy of a provisioner, revocation.

Registered on the ``ca`` group at the end of :mod:`ostiary.cli.ca`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from ostiary.authority.ssh import SSHAuthority
from ostiary.authority.ssh_keys import init_ssh_ca, load_ssh_ca, ssh_ca_public_file
from ostiary.cli.console import note, out
from ostiary.cli.options import CADir, PasswordFile
from ostiary.cli.unlock import NoPasswordFile, UnlockedCA, ca_paths, open_ca_store, unlock_ca
from ostiary.core.errors import BadRequest, NotFound
from ostiary.core.keys import KeyType, parse_key_type
from ostiary.core.lifetime import format_duration, parse_duration
from ostiary.provisioners.ssh import SSHPolicy, load_ssh_policy, set_ssh_policy
from ostiary.ssh import SSHCertificateType
from ostiary.store import SSHCertificateRepository

ssh_app = typer.Typer(
    help="SSH certificates: the SSH CA keys, provisioner policy, revocation (docs/ssh.md).",
    no_args_is_help=True,
)
_ACTOR = "cli"


def open_ssh_authority(ca: UnlockedCA) -> SSHAuthority:
    keys = load_ssh_ca(ca.material, ca.password)
    if keys is None:
        raise NotFound("this CA has no SSH CA keys: run 'ostiary ca ssh init' first")
    return SSHAuthority(keys, ca.store, clock=ca.authority.clock)


@ssh_app.command("init")
def init(
    key_type: Annotated[
        str,
        typer.Option(
            "--key-type", help="ed25519, p256, p384 or rsa3072 (a token CA: not ed25519)."
        ),
    ] = KeyType.ED25519.value,
    directory: CADir = None,
    password_file: PasswordFile = None,
) -> None:
    """Make the SSH user CA and host CA keys (encrypted with the CA password)."""
    kind = parse_key_type(key_type)
    with unlock_ca(directory, password_file) as ca:
        keys = init_ssh_ca(ca.material, ca.password, kind)
        try:
            ca.authority.audit(
                "ssh_ca.initialized", actor=_ACTOR, target="ssh", details={"key_type": kind.value}
            )
        finally:
            keys.close()
    paths = ca_paths(directory)
    for cert_type in (SSHCertificateType.USER, SSHCertificateType.HOST):
        note(f"SSH {cert_type.name.lower()} CA: {ssh_ca_public_file(paths, cert_type)}")


@ssh_app.command("policy")
def policy(
    provisioner: Annotated[str, typer.Argument(help="A provisioner (jwk, oidc, ...).")],
    host: Annotated[
        bool | None,
        typer.Option("--host/--no-host", help="Whether it may issue host certificates."),
    ] = None,
    user_lifetime: Annotated[
        str | None, typer.Option("--user-lifetime", help="Longest user certificate (16h).")
    ] = None,
    host_lifetime: Annotated[
        str | None, typer.Option("--host-lifetime", help="Longest host certificate (30d).")
    ] = None,
    principal: Annotated[
        list[str] | None,
        typer.Option("--principal", help="Allowed principal glob, e.g. '*.ops' (repeatable)."),
    ] = None,
    extension: Annotated[
        list[str] | None,
        typer.Option(
            "--extension",
            help="User certificate extension, e.g. permit-pty "
            "(repeatable; replaces the default five).",
        ),
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            help="Critical option NAME=VALUE: source-address, force-command (repeatable).",
        ),
    ] = None,
    principals_from: Annotated[
        list[str] | None,
        typer.Option(
            "--principals-from",
            help="Identity to principals: email-local, email, upn-local, upn, cn, groups, "
            "claim:NAME (repeatable; replaces the list).",
        ),
    ] = None,
    directory: CADir = None,
    _password_file: NoPasswordFile = None,
) -> None:
    """Show, or change, a provisioner's SSH policy."""
    with open_ca_store(directory) as opened:
        _, current = load_ssh_policy(opened.store, provisioner)
        changes = (host, user_lifetime, host_lifetime, principal, extension, option,
                   principals_from)  # fmt: skip
        if all(value is None for value in changes):
            _show(current)
            return
        options = dict(current.critical_options)
        for item in option or []:
            name, sep, value = item.partition("=")
            if not sep or not value:
                raise BadRequest(f"--option {item!r}: write NAME=VALUE")
            options[name.strip()] = value.strip()
        updated = SSHPolicy(
            user_lifetime=parse_duration(user_lifetime) if user_lifetime else current.user_lifetime,
            host_lifetime=parse_duration(host_lifetime) if host_lifetime else current.host_lifetime,
            host=current.host if host is None else host,
            principals=tuple(principal) if principal else current.principals,
            extensions=tuple(extension) if extension is not None else current.extensions,
            critical_options=options,
            principals_from=(
                tuple(principals_from) if principals_from is not None else current.principals_from
            ),
        )
        set_ssh_policy(opened.store, provisioner, updated, now=datetime.now(UTC), actor=_ACTOR)
    _show(updated)


def _show(policy: SSHPolicy) -> None:
    out.print(f"user certificates: up to {format_duration(policy.user_lifetime)}")
    hosts = format_duration(policy.host_lifetime) if policy.host else "no"
    out.print(f"host certificates: {'up to ' + hosts if policy.host else hosts}")
    out.print(f"principals:        {', '.join(policy.principals)}")
    out.print(f"extensions:        {', '.join(policy.extensions) or '(none)'}")
    options = ", ".join(f"{k}={v}" for k, v in policy.critical_options.items())
    out.print(f"critical options:  {options or '(none)'}")
    out.print(f"principals from:   {', '.join(policy.principals_from) or '(no identity)'}")


@ssh_app.command("revoke")
def revoke(
    serial: Annotated[int, typer.Argument(help="The certificate's serial (decimal).", min=0)],
    directory: CADir = None,
    password_file: PasswordFile = None,
) -> None:
    """Revoke an SSH certificate: the KRL and principals-command refuse it at once."""
    with unlock_ca(directory, password_file) as ca:
        record = open_ssh_authority(ca).revoke(serial, actor=_ACTOR)
    note(f"Revoked SSH certificate {serial} ({record.key_id})")


@ssh_app.command("list")
def list_certificates(
    query: Annotated[
        str | None, typer.Argument(help="Key id, principal or fingerprint text.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 50,
    directory: CADir = None,
    _password_file: NoPasswordFile = None,
) -> None:
    """The newest SSH certificates: serial, type, status, not_after, key id, principals."""
    with open_ca_store(directory) as opened, opened.store.transaction(read_only=True) as session:
        for r in SSHCertificateRepository(session).search(query, limit=limit):
            typer.echo(
                f"{r.serial_number}\t{r.cert_type}\t{r.status}\t"
                f"{r.not_after:%Y-%m-%dT%H:%M:%SZ}\t{r.key_id}\t{','.join(r.principals)}"
            )
