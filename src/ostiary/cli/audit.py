"""``ostiary ca audit verify`` and ``ostiary ca migrate``: the database, no key needed.

Registered on the ``ca`` group at the end of :mod:`ostiary.cli.ca`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ostiary.authority.folder import CAPaths, load_ca_public
from ostiary.cli.console import fail, note, out
from ostiary.cli.options import CADir
from ostiary.cli.unlock import ca_paths
from ostiary.core.errors import BadRequest
from ostiary.store import AuditLog, Store, current_revision, head_revision, migrate
from ostiary.store.migrate import pending_revisions

audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)


def _paths(directory: Path | None) -> CAPaths:
    paths = ca_paths(directory)
    if not paths.exists():
        raise BadRequest(f"no CA in {paths.root}: run 'ostiary ca init' first (or give --dir)")
    return paths


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


def migrate_database(
    directory: CADir = None,
    password_file: _NoPassword = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Only list the migrations that would run; change nothing."),
    ] = False,
) -> None:
    """Bring the CA's database schema up to date (safe to run on every start)."""
    paths = _paths(directory)
    config, _, _ = load_ca_public(paths)
    url = paths.database_url(config)
    if dry_run:
        store = Store.from_url(url)
        try:
            current, pending = current_revision(store.engine), pending_revisions(store.engine)
        finally:
            store.dispose()
        if not pending:
            out.print(f"The database schema is up to date (revision {current})")
            return
        out.print(f"The database is at revision {current or '(empty)'}; would apply:")
        for revision in pending:
            out.print(f"  {revision.revision}: {revision.message}")
        return
    migrate(url)
    note(f"Database schema at revision {head_revision()}")
