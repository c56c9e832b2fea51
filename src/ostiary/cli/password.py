"""``ostiary ca password change``: re-seal every key of the CA under a new password.

Registered on the ``ca`` group at the end of :mod:`ostiary.cli.ca`; what a change does and
why a crash leaves a CA that opens is in :mod:`ostiary.authority.password_change`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from ostiary.authority.password_change import change_password
from ostiary.cli.console import err, note
from ostiary.cli.options import CADir, PasswordFile
from ostiary.cli.secrets import obtain_password
from ostiary.cli.unlock import open_ca_store
from ostiary.core.errors import BadRequest

password_app = typer.Typer(help="The CA password that seals its keys.", no_args_is_help=True)

NEW_PASSWORD_ENV = "OSTIARY_NEW_PASSWORD"


@password_app.command("change")
def change(
    password_file: PasswordFile = None,
    new_password_file: Annotated[
        Path | None,
        typer.Option(
            "--new-password-file",
            help=f"File whose first line is the new password (else ${NEW_PASSWORD_ENV} "
            "or a prompt, asked twice).",
            show_default=False,
        ),
    ] = None,
    directory: CADir = None,
) -> None:
    """Re-encrypt every key file and provisioner key under a new password.

    A wrong old password changes nothing; an interrupted change leaves a CA that opens with
    one of the two passwords, and the same command run again finishes it.
    """
    with open_ca_store(directory) as opened:
        if opened.config.kms == "pkcs11":
            raise BadRequest(
                "this CA's keys are in a PKCS#11 token: change the token's PIN with its own tools"
            )
        old = obtain_password(password_file, purpose=f"the CA key in {opened.paths.root}")
        new = obtain_password(
            new_password_file, purpose="the new CA password", confirm=True, env=NEW_PASSWORD_ENV
        )
        with err.status("Re-encrypting the keys..."):
            changed = change_password(
                opened.paths, opened.store, old, new, now=datetime.now(UTC), actor="cli"
            )
    note(
        f"Password changed: {len(changed.key_files)} key files, "
        f"{len(changed.provisioners)} provisioner keys and {len(changed.eab_keys)} ACME EAB "
        "keys re-encrypted"
    )
