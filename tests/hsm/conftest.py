"""SoftHSM2 for the PKCS#11 tests: one configuration per test session, a pool of tokens.

A PKCS#11 module reads its configuration and enumerates tokens once per process (at
``C_Initialize``), so every token the in-process tests use is initialized up front, each
test taking its own. Subprocesses (``ca serve``) get the same ``SOFTHSM2_CONF``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import IN_CI, require_tool

PIN = "246810"
SO_PIN = "13579135"
#: Token labels, one per test that needs a token of its own.
TOKENS = (
    "signer-ec",
    "signer-p384",
    "signer-rsa",
    "signer-threads",
    "signer-refusals",
    "cli-init",
    "ssh-ca",
    "cli-refusals",
    "cli-labels",
    "cli-rsa",
    "serve",
    "server-gone",
    "cli-rotate",
    "cli-backup",
)
_MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
)


@dataclass(frozen=True)
class SoftHSM:
    module: Path
    config: Path
    tokens: Path

    def pin_file(self, folder: Path, pin: str = PIN) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"pin-{pin}"
        path.write_text(pin + "\n")
        return path


def _module() -> Path:
    for candidate in _MODULE_CANDIDATES:
        if Path(candidate).is_file():
            return Path(candidate)
    message = "SoftHSM2's PKCS#11 module is not installed (Debian package softhsm2)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHSM]:
    tool = require_tool("softhsm2-util")
    module = _module()
    folder = tmp_path_factory.mktemp("softhsm")
    tokens = folder / "tokens"
    tokens.mkdir()
    config = folder / "softhsm2.conf"
    config.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(config)
    for label in TOKENS:
        subprocess.run(
            [tool, "--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin", SO_PIN],
            check=True,
            capture_output=True,
        )
    try:
        yield SoftHSM(module, config, tokens)
    finally:
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous
