"""``ostiary ca requests list|approve|reject`` and ``ostiary ca officer add``.

- ``list`` reads the CA folder's database (no key, no password) or, with ``--cert/--key``,
  asks the CA server as an officer. Ids are shown whole; every requester-supplied field is
  made harmless for the terminal (:func:`ostiary.cli.console.shown`); requests that name an
  existing identity are flagged.
- ``approve`` and ``reject`` act as an officer: the officer's certificate and key over mTLS
  against the CA server (``--cert``, ``--key``, ``--ca-url``, ``--root``), never the CA
  key's password, so the server audits them as ``officer:<name>``. An id may be a unique
  prefix. ``reject --all`` rejects every waiting request (of ``--provisioner``, older than
  ``--older-than``) at once.
- ``officer add NAME --cert CRT`` binds a certificate this CA issued to an officer (by its
  fingerprint). It issues nothing, so it needs no CA key: the officer got the certificate
  the usual way (a token and ``ostiary cert request``).

Registered on the ``ca`` group at the end of :mod:`ostiary.cli.ca`.
"""

from __future__ import annotations

import getpass
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ostiary.cli.console import note, out, shown
from ostiary.cli.files import read_input
from ostiary.cli.options import CADir
from ostiary.cli.unlock import NoPasswordFile, open_ca_store
from ostiary.core.encoding import load_certificate_chain
from ostiary.core.errors import BadRequest
from ostiary.core.lifetime import parse_duration
from ostiary.provisioners.approval_queue import open_pending_records
from ostiary.provisioners.officers import bind_officer_certificate, identity_warnings

if TYPE_CHECKING:  # the HTTP client is imported only by the commands that call the CA
    from ostiary.client.officer import OfficerClient

requests_app = typer.Typer(
    help="Certificate requests waiting for an officer (approval provisioners).",
    no_args_is_help=True,
)
officer_app = typer.Typer(
    help="Who may approve requests and use the console.", no_args_is_help=True
)

_ACTOR = "cli"

OfficerCert = Annotated[
    Path | None,
    typer.Option(
        "--cert",
        help="The officer's certificate (bound with 'ca officer add').",
        show_default=False,
    ),
]
OfficerKey = Annotated[
    Path | None, typer.Option("--key", help="The officer's private key.", show_default=False)
]
CAUrl = Annotated[
    str | None,
    typer.Option(
        "--ca-url", help="The CA's URL (default: saved by 'ostiary bootstrap').", show_default=False
    ),
]
RootFile = Annotated[
    Path | None,
    typer.Option(
        "--root",
        help="Trusted root, PEM (default: saved by 'ostiary bootstrap').",
        show_default=False,
    ),
]


@requests_app.command("list")
def list_requests(
    format_: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    cert: OfficerCert = None,
    key: OfficerKey = None,
    ca_url: CAUrl = None,
    root: RootFile = None,
    directory: CADir = None,
    password_file: NoPasswordFile = None,
) -> None:
    """List the pending requests, oldest first (from the CA folder, or as an officer)."""
    if format_ not in ("table", "json"):
        raise BadRequest(f"unknown format {format_!r}: use table or json")
    if cert is not None or key is not None:
        with _officer_client(cert, key, ca_url, root) as client:
            pending = client.pending()
    else:
        pending = _local_pending(directory)
    if format_ == "json":
        out.print_json(json.dumps(pending))
        return
    if not pending:
        note("No pending requests")
        return
    for r in pending:  # one block per request: nothing is cut, at any terminal width
        code = "needs the requester's code" if r["needs_code"] else "no code"
        expires = str(r["expires_at"])[:16].replace("T", " ")
        out.print(
            f"[bold]{shown(r['request_id'])}[/]  {shown(r['provisioner'])}  "
            f"expires {shown(expires)}Z  {code}"
        )
        out.print(f"  subject: {shown(r['subject'])}")
        out.print(f"  names:   {shown(', '.join(r['sans'])) or 'none'}")
        out.print(f"  note:    {shown(r['note']) or 'none'}")
        for warning in r["warnings"]:
            out.print(f"  [bold red]warning:[/] {shown(warning)}")


def _local_pending(directory: Path | None) -> list[dict[str, Any]]:
    with open_ca_store(directory) as ca:
        now = datetime.now(UTC)
        records = open_pending_records(ca.store, now=now)  # opened: docs/console.md
        warnings = identity_warnings(ca.store, records, now=now)
    return [
        {
            "request_id": r.request_id,
            "provisioner": r.provisioner,
            "subject": r.subject,
            "sans": list(r.sans),
            "note": r.note,
            "needs_code": r.code_sha256 is not None,
            "created_at": r.created_at.isoformat(),
            "expires_at": r.expires_at.isoformat(),
            "warnings": warnings.get(r.request_id, []),
        }
        for r in records
    ]


@requests_app.command("approve")
def approve(
    request_id: Annotated[
        str, typer.Argument(metavar="ID", help="The request id, or a unique prefix of it.")
    ],
    code: Annotated[
        str | None,
        typer.Option(
            "--code",
            help="The one-time code the requester tells you. Other local users can read it "
            "in the process list: prefer --code-file, or the prompt.",
            show_default=False,
        ),
    ] = None,
    code_file: Annotated[
        Path | None,
        typer.Option(
            "--code-file",
            help="Read the one-time code from the first line of this file ('-': standard "
            "input). Without --code or --code-file, a terminal is asked for it.",
            show_default=False,
        ),
    ] = None,
    cert: OfficerCert = None,
    key: OfficerKey = None,
    ca_url: CAUrl = None,
    root: RootFile = None,
) -> None:
    """Approve a pending request, as an officer: the certificate is issued for its names."""
    code = _approval_code(code, code_file)
    with _officer_client(cert, key, ca_url, root) as client:
        answer = client.approve(request_id, code)
    note(
        f"Approved request {answer.get('request_id')}: issued serial {answer.get('serial_number')}"
    )


def _approval_code(code: str | None, code_file: Path | None) -> str | None:
    """The one-time code: ``--code``, ``--code-file`` (``-``: standard input), else typed at
    a terminal without echo (empty: the request needs none), else none.
    """
    if code is not None and code_file is not None:
        raise BadRequest("give --code or --code-file, not both")
    if code_file is not None:
        data = (
            sys.stdin.buffer.read() if str(code_file) == "-" else read_input(code_file, "code file")
        )
        lines = data.splitlines()
        first = lines[0].strip() if lines else b""
        if not first:
            raise BadRequest(f"the code file {code_file} is empty")
        try:
            return first.decode("ascii")
        except UnicodeDecodeError:
            raise BadRequest(f"the code file {code_file} does not hold a code") from None
    if code is None and sys.stdin.isatty():
        typed = getpass.getpass("One-time code from the requester (Enter if none): ").strip()
        return typed or None
    return code


@requests_app.command("reject")
def reject(
    request_id: Annotated[
        str | None,
        typer.Argument(metavar="[ID]", help="The request id, or a unique prefix of it."),
    ] = None,
    reason: Annotated[str, typer.Option("--reason", help="Shown to the requester.")] = "",
    all_: Annotated[
        bool,
        typer.Option("--all", help="Every waiting request (narrow with the options below)."),
    ] = False,
    provisioner: Annotated[
        str | None,
        typer.Option("--provisioner", help="With --all: only this provisioner's requests."),
    ] = None,
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", help="With --all: only requests older than this (2h, 3d)."),
    ] = None,
    cert: OfficerCert = None,
    key: OfficerKey = None,
    ca_url: CAUrl = None,
    root: RootFile = None,
) -> None:
    """Reject a pending request with a reason, or with --all every waiting one."""
    if not reason.strip():
        raise BadRequest("give --reason (the requester reads it)")
    if all_ == (request_id is not None):
        raise BadRequest("give a request ID, or --all (not both)")
    if not all_ and (provisioner is not None or older_than is not None):
        raise BadRequest("--provisioner and --older-than go with --all")
    before = datetime.now(UTC) - parse_duration(older_than) if older_than else None
    with _officer_client(cert, key, ca_url, root) as client:
        if request_id is not None:
            answer = client.reject(request_id, reason)
            note(f"Rejected request {answer.get('request_id')}")
            return
        rejected = client.reject_all(reason, provisioner=provisioner, submitted_before=before)
    for rejected_id in rejected:
        out.print(shown(rejected_id))
    note(f"Rejected {len(rejected)} request{'s' if len(rejected) != 1 else ''}")


@officer_app.command("add")
def officer_add(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="The officer's name (audited as officer:NAME).")
    ],
    cert: Annotated[
        Path,
        typer.Option(
            "--cert", help="The officer's certificate, issued by this CA.", show_default=False
        ),
    ],
    directory: CADir = None,
    password_file: NoPasswordFile = None,
) -> None:
    """Give the officer role (console, approvals) to NAME through this one certificate."""
    certificate = load_certificate_chain(read_input(cert, "certificate"))[0]
    with open_ca_store(directory) as ca:
        serial = bind_officer_certificate(
            ca.store, name, certificate, ca=ca.identity, now=datetime.now(UTC), actor=_ACTOR
        )
    note(f"{name!r} is now an officer through certificate {serial}")


def _officer_client(
    cert: Path | None, key: Path | None, ca_url: str | None, root: Path | None
) -> OfficerClient:
    from ostiary.cli.client import ca_connector
    from ostiary.cli.holder import HolderFiles
    from ostiary.client.officer import OfficerClient

    if cert is None or key is None:
        raise BadRequest(
            "officers act with their own certificate: give --cert and --key (a certificate "
            "bound with 'ostiary ca officer add NAME --cert CRT'); no CA password is used"
        )
    chain, private_key = HolderFiles(cert, key).load()
    connect = ca_connector(ca_url, root)
    with connect() as reachable:  # the URL and roots, as every client command reads them
        url, roots = reachable.ca_url, reachable.trusted_roots
    return OfficerClient(url, roots, chain, private_key)
