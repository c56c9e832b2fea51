"""Option types shared by the commands, so that every command spells them the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

CADir = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="CA folder (default: $OSTIARY_HOME, else ~/.ostiary).",
        show_default=False,
    ),
]
PasswordFile = Annotated[
    Path | None,
    typer.Option(
        "--password-file",
        "--pin-file",
        help="File whose first line is the CA key password (else $OSTIARY_PASSWORD or a prompt); "
        "for a PKCS#11 CA, --pin-file: the token's PIN (else $OSTIARY_PIN or a prompt).",
        show_default=False,
    ),
]
Sans = Annotated[
    list[str] | None,
    typer.Option(
        "--san",
        help="Subject alternative name; the type is detected (e-mail, IP, URI, DNS) or given "
        "as a prefix: dns:, email:, ip:, uri:, upn:, pid:. Repeat for several.",
        show_default=False,
    ),
]
Force = Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")]
