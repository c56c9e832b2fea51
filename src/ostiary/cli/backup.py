"""``ostiary ca backup`` and ``ostiary ca restore``: the CA folder and its database, archived.

Registered on the ``ca`` group at the end of :mod:`ostiary.cli.ca`. The archive format and
what a restore checks are in :mod:`ostiary.authority.backup`; docs/lifecycle.md shows use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ostiary.authority.backup import make_backup, restore_backup
from ostiary.cli.console import err, note
from ostiary.cli.files import check_writable, write_file
from ostiary.cli.options import CADir, Force
from ostiary.cli.secrets import obtain_password
from ostiary.cli.unlock import ca_paths
from ostiary.core.errors import BadRequest

BACKUP_PASSWORD_ENV = "OSTIARY_BACKUP_PASSWORD"

BackupPasswordFile = Annotated[
    Path | None,
    typer.Option(
        "--password-file",
        help="File whose first line is the archive's password "
        f"(else ${BACKUP_PASSWORD_ENV} or a prompt).",
        show_default=False,
    ),
]


def backup(
    out_file: Annotated[Path, typer.Option("--out", help="The archive to write (0600).")],
    password_file: BackupPasswordFile = None,
    force: Force = False,
    directory: CADir = None,
) -> None:
    """Archive the CA while it runs: settings, certificates, key files (still encrypted) and a
    consistent snapshot of the database, encrypted under a password and checksummed.
    """
    paths = ca_paths(directory)
    if not paths.exists():
        raise BadRequest(f"no CA in {paths.root}: run 'ostiary ca init' first (or give --dir)")
    check_writable(out_file, force=force)
    password = obtain_password(
        password_file, purpose="the backup archive", confirm=True, env=BACKUP_PASSWORD_ENV
    )
    with err.status("Taking a snapshot of the database..."):
        sealed, summary = make_backup(paths, password)
    write_file(out_file, sealed, private=True)
    note(f"Wrote {out_file}: {len(summary.files)} files, database at revision {summary.revision}")


def restore(
    archive: Annotated[Path, typer.Argument(help="An archive made by 'ostiary ca backup'.")],
    directory: Annotated[
        Path, typer.Option("--dir", help="The new CA folder (must not exist, or be empty).")
    ],
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="An empty database to restore into (default: SQLite in the new folder).",
            show_default=False,
        ),
    ] = None,
    password_file: BackupPasswordFile = None,
) -> None:
    """Recreate a CA from an archive, in a new folder; the old one is never touched."""
    password = obtain_password(password_file, purpose="the backup archive", env=BACKUP_PASSWORD_ENV)
    with err.status("Checking and restoring the archive..."):
        summary = restore_backup(archive, password, directory, database_url=database_url)
    note(f"Restored the CA of {summary.created} into {directory}")
