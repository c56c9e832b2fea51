"""Writing files where ``os.fchmod`` does not exist (Windows before Python 3.13): every
``cert request`` and ``cert renew`` writes through :func:`write_file`."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ostiary.cli.files import write_file


@pytest.mark.parametrize(("private", "mode"), [(True, 0o600), (False, 0o644)])
def test_files_are_written_without_fchmod(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private: bool, mode: int
) -> None:
    monkeypatch.delattr(os, "fchmod")
    target = tmp_path / "alice.key"
    write_file(target, b"data", private=private)
    assert target.read_bytes() == b"data"
    assert stat.S_IMODE(target.stat().st_mode) == mode
    assert [p.name for p in tmp_path.iterdir()] == ["alice.key"]  # no temporary file left
