"""Reading passwords for key files: from a file, the environment, or a prompt."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from ostiary.core.errors import BadRequest, NotFound

#: Environment variable that may hold the CA password (for services and scripts).
PASSWORD_ENV = "OSTIARY_PASSWORD"
#: Environment variable that may hold the PIN of a PKCS#11 CA's token (docs/hsm.md).
PIN_ENV = "OSTIARY_PIN"


def read_password_file(path: Path) -> bytes:
    """The first line of ``path`` (trailing newline removed); an empty file is refused."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"password file {path} does not exist") from None
    except OSError as exc:
        raise BadRequest(f"password file {path} cannot be read: {exc.strerror}") from None
    password = data.splitlines()[0] if data else b""
    if not password:
        raise BadRequest(f"password file {path} is empty")
    return password


def obtain_password(
    password_file: Path | None,
    *,
    purpose: str,
    confirm: bool = False,
    env: str = PASSWORD_ENV,
    secret: str = "password",
    option: str = "--password-file",
) -> bytes:
    """A password from ``--password-file``, else ``$OSTIARY_PASSWORD``, else a prompt.

    ``secret``, ``option`` and ``env`` are what the messages call it (see :func:`obtain_pin`).
    """
    if password_file is not None:
        return read_password_file(password_file)
    from_env = os.environ.get(env)
    if from_env:
        return from_env.encode()
    if not sys.stdin.isatty():
        raise BadRequest(f"a {secret} is needed for {purpose}: give {option} or set {env}")
    password = getpass.getpass(f"{secret[0].upper()}{secret[1:]} for {purpose}: ").encode()
    if not password:
        raise BadRequest(f"the {secret} is empty")
    if confirm and getpass.getpass("Repeat it: ").encode() != password:
        raise BadRequest(f"the two {secret}s differ")
    return password


def obtain_pin(pin_file: Path | None, *, token: str) -> bytes:
    """A PKCS#11 token's PIN: ``--pin-file``, else ``$OSTIARY_PIN``, else a prompt, named so."""
    return obtain_password(
        pin_file, purpose=f"token {token!r}", env=PIN_ENV, secret="PIN", option="--pin-file"
    )
