"""``ostiary ca requests list|approve|reject`` and ``ostiary ca officer add``.

The officer's work from the command line, on the CA folder (the key is unlocked to issue).
Approval issues through the same pipeline as every other path; every decision is audited
with the actor ``cli``. Registered on the ``ca`` group at the end of :mod:`ostiary.cli.ca`.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from ostiary.cli.console import note, out
from ostiary.cli.options import CADir, PasswordFile
from ostiary.core.encoding import serial_hex
from ostiary.core.errors import BadRequest
from ostiary.provisioners.approval import (
    add_officer,
    approve_request,
    pending_requests,
    reject_request,
)

requests_app = typer.Typer(
    help="Certificate requests waiting for an officer (approval provisioners).",
    no_args_is_help=True,
)
officer_app = typer.Typer(
    help="Who may approve requests and use the console.", no_args_is_help=True
)

_ACTOR = "cli"


@requests_app.command("list")
def list_requests(
    format_: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    directory: CADir = None,
    password_file: PasswordFile = None,
) -> None:
    """List the pending requests, oldest first."""
    if format_ not in ("table", "json"):
        raise BadRequest(f"unknown format {format_!r}: use table or json")
    from ostiary.cli.ca import open_authority

    with open_authority(directory, password_file) as authority:
        pending = pending_requests(authority.store, now=authority.clock())
    if format_ == "json":
        out.print_json(
            json.dumps(
                [
                    {
                        "request_id": r.request_id,
                        "provisioner": r.provisioner,
                        "subject": r.subject,
                        "sans": list(r.sans),
                        "note": r.note,
                        "needs_code": r.needs_code,
                        "created_at": r.created_at.isoformat(),
                        "expires_at": r.expires_at.isoformat(),
                    }
                    for r in pending
                ]
            )
        )
        return
    if not pending:
        note("No pending requests")
        return
    table = Table("id", "subject", "names", "note", "provisioner", "code", "expires")
    for r in pending:
        table.add_row(
            r.request_id,
            r.subject,
            "\n".join(r.sans),
            r.note or "",
            r.provisioner,
            "yes" if r.needs_code else "",
            f"{r.expires_at:%Y-%m-%d %H:%M}Z",
        )
    out.print(table)


@requests_app.command("approve")
def approve(
    request_id: Annotated[str, typer.Argument(metavar="ID", help="The request id.")],
    code: Annotated[
        str | None,
        typer.Option(
            "--code", help="The one-time code the requester tells you.", show_default=False
        ),
    ] = None,
    directory: CADir = None,
    password_file: PasswordFile = None,
) -> None:
    """Approve a pending request: the certificate is issued for the CSR's names."""
    from ostiary.cli.ca import open_authority

    with open_authority(directory, password_file) as authority:
        certificate = approve_request(authority, request_id, officer=_ACTOR, code=code)
    note(f"Approved: issued serial {serial_hex(certificate.serial_number)}")


@requests_app.command("reject")
def reject(
    request_id: Annotated[str, typer.Argument(metavar="ID", help="The request id.")],
    reason: Annotated[str, typer.Option("--reason", help="Shown to the requester.")],
    directory: CADir = None,
    password_file: PasswordFile = None,
) -> None:
    """Reject a pending request with a reason."""
    from ostiary.cli.ca import open_authority

    with open_authority(directory, password_file) as authority:
        reject_request(authority, request_id, officer=_ACTOR, reason=reason)
    note(f"Rejected request {request_id}")


@officer_app.command("add")
def officer_add(
    subject_cn: Annotated[
        str, typer.Argument(metavar="SUBJECT_CN", help="Common name of the officer's certificate.")
    ],
    directory: CADir = None,
    password_file: PasswordFile = None,
) -> None:
    """Grant the officer role (console, approvals) to certificates with this subject CN."""
    from ostiary.cli.ca import open_authority

    with open_authority(directory, password_file) as authority:
        add_officer(authority.store, subject_cn, now=authority.clock(), actor=_ACTOR)
    note(f"{subject_cn!r} is now an officer")
