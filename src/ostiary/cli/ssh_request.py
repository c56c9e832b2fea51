"""``ostiary ssh request``: an SSH user certificate an officer approves (docs/ssh.md).

``ostiary ssh request KEY.pub --provisioner NAME --principal P`` queues the request and
prints its id (and the one-time code to tell the officer, if the provisioner wants one);
``--collect ID`` later writes ``KEY-cert.pub`` once it is approved. ``--wait SECONDS`` keeps
asking until then.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ostiary.cli.connect import CAUrl, RootFile
from ostiary.cli.console import note
from ostiary.cli.files import check_writable, read_input, write_file
from ostiary.core.errors import BadRequest, Conflict, PolicyDenied

_POLL_SECONDS = 1.0


def request(
    public_key: Annotated[Path, typer.Argument(metavar="KEY.pub", help="The public key file.")],
    provisioner: Annotated[
        str | None, typer.Option("--provisioner", help="An approval provisioner.")
    ] = None,
    principal: Annotated[
        list[str] | None, typer.Option("--principal", help="A principal to ask for (repeatable).")
    ] = None,
    request_note: Annotated[
        str | None, typer.Option("--note", help="For the officer: who and why.")
    ] = None,
    collect: Annotated[
        str | None, typer.Option("--collect", metavar="ID", help="Collect this request.")
    ] = None,
    wait: Annotated[
        float, typer.Option("--wait", help="Seconds to wait for the officer (0: ask once).", min=0)
    ] = 0.0,
    ca_url: CAUrl = None,
    root: RootFile = None,
) -> None:
    """Ask an officer for an SSH user certificate, or collect it (KEY-cert.pub)."""
    from ostiary.cli.ssh import ssh_client

    target = public_key.with_name(public_key.name.removesuffix(".pub") + "-cert.pub")
    line = read_input(public_key, "public key").decode("utf-8", "replace").strip()
    with ssh_client(ca_url, root) as client:
        if collect is None:
            if provisioner is None or not principal:
                raise BadRequest("give --provisioner and at least one --principal (or --collect)")
            answer = client.ssh_request(line, provisioner, principal, request_note)
            collect = str(answer["request_id"])
            note(f"Request {collect} waits for an officer (ostiary ca requests approve {collect})")
            if answer.get("code"):
                note(f"Tell the officer this one-time code: {answer['code']}")
            typer.echo(collect)
            if wait == 0:
                return
        elif provisioner is not None or principal:
            raise BadRequest("--collect takes the request id only")
        deadline = time.monotonic() + wait
        while True:
            status = client.ssh_request_status(collect)
            if status.get("status") == "issued" or time.monotonic() >= deadline:
                break
            if status.get("status") in ("rejected", "expired"):
                break
            time.sleep(_POLL_SECONDS)
    _finish(status, target, collect)


def _finish(status: dict[str, Any], target: Path, request_id: str) -> None:
    state = status.get("status")
    if state == "issued" and status.get("certificate"):
        check_writable(target, force=True)
        write_file(target, (str(status["certificate"]) + "\n").encode("ascii"))
        note(f"Wrote {target}")
        return
    if state == "rejected":
        raise PolicyDenied(f"request {request_id} was rejected: {status.get('reason') or '?'}")
    if state == "expired":
        raise PolicyDenied(f"request {request_id} expired before an officer decided")
    raise Conflict(f"request {request_id} is {state}: ask again later with --collect")
