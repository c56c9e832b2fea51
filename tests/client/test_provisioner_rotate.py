"""``ca provisioner rotate``: a jwk provisioner's new key; tokens of the old one are refused."""

from __future__ import annotations

import time
from pathlib import Path

from ostiary.provisioners.cache import PROVISIONER_RECHECK_SECONDS
from tests.client.conftest import RunningCA, ok, refused, run_cli


def request(ca: RunningCA, name: str, token: str, folder: Path) -> int:
    crt, key = folder / f"{name}.crt", folder / f"{name}.key"
    return run_cli("cert", "request", name, crt, key, "--token", token).exit_code


def mint(ca: RunningCA, subject: str) -> str:
    return ca.ca("token", subject, "--provisioner", "rotating").stdout.strip()


def test_tokens_of_the_old_key_stop_working(bootstrapped: RunningCA, tmp_path: Path) -> None:
    ca = bootstrapped
    ca.ca("provisioner", "add", "rotating")
    old = [mint(ca, f"old-{i}") for i in range(2)]
    assert request(ca, "old-0", old[0], tmp_path) == 0  # the old key works until the rotation

    rotated = ca.ca("provisioner", "rotate", "rotating")
    assert "new key" in rotated.stderr + rotated.stdout
    # The server re-reads a changed provisioner within PROVISIONER_RECHECK_SECONDS: wait it out,
    # then one attempt (a poll would spend the token if it were still accepted).
    time.sleep(PROVISIONER_RECHECK_SECONDS + 1)
    assert request(ca, "old-1", old[1], tmp_path) != 0
    assert not (tmp_path / "old-1.crt").exists()
    new = mint(ca, "new-0")
    assert request(ca, "new-0", new, tmp_path) == 0


def test_rotation_refusals(bootstrapped: RunningCA, tmp_path: Path) -> None:
    ca = bootstrapped
    home = ("--dir", ca.home)
    wrong = tmp_path / "wrong"
    wrong.write_text("not the CA password\n")
    refused("ca", "provisioner", "rotate", "nobody", *home, "--password-file", ca.password_file)
    refused("ca", "provisioner", "rotate", "laptops", *home, "--password-file", wrong)
    ok("ca", "provisioner", "list", *home)
