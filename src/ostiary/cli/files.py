"""Writing the CLI's output files: never a half-written file, keys 0600, no silent overwrite."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ostiary.core.errors import BadRequest, Conflict


def check_writable(*paths: Path, force: bool = False) -> None:
    """Refuse before any work is done if an output exists (without ``force``) or cannot be made."""
    for path in paths:
        if path.exists() and not force:
            raise Conflict(f"{path} exists already: use --force to overwrite it")
        if path.exists() and path.is_dir():
            raise BadRequest(f"{path} is a folder, not a file")
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise BadRequest(f"cannot write {path}: folder {parent} does not exist")


def write_file(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write atomically (temporary file + rename); ``private`` files are 0600."""
    parent = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        mode = 0o600 if private else 0o644
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        else:  # Windows before Python 3.13: the mode is only the read-only bit there; the
            os.chmod(tmp, mode)  # user's profile folder's ACL is what keeps a key private
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_input(path: Path, what: str) -> bytes:
    """The bytes of an input file, or a one-line error naming it."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BadRequest(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise BadRequest(f"{what} {path} is a folder, not a file") from None
    except OSError as exc:
        raise BadRequest(f"cannot read {what} {path}: {exc.strerror}") from None
