"""``ostiary bootstrap`` against a real CA server: trust only the root with that fingerprint."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import hashes

from ostiary.client.config import load_client_config
from tests.client.conftest import RunningCA, free_port, ok, refused


def test_bootstrap_saves_the_root_with_that_fingerprint_and_the_url(
    running_ca: RunningCA, client_config: Path
) -> None:
    colons = ":".join(running_ca.fingerprint[i : i + 2] for i in range(0, 64, 2)).upper()
    result = ok("bootstrap", "--ca-url", running_ca.url + "/", "--fingerprint", colons)
    assert result.stdout.strip() == running_ca.fingerprint
    config = load_client_config(client_config)
    assert config.ca_url == running_ca.url
    assert config.root.fingerprint(hashes.SHA256()).hex() == running_ca.fingerprint
    assert config.dump_root() == running_ca.root_file.read_bytes()


def test_bootstrap_refuses_a_wrong_fingerprint_and_saves_nothing(
    running_ca: RunningCA, client_config: Path
) -> None:
    wrong = ("0" if running_ca.fingerprint[0] != "0" else "1") + running_ca.fingerprint[1:]
    result = refused("bootstrap", "--ca-url", running_ca.url, "--fingerprint", wrong)
    assert "no root served by" in result.stderr
    assert not client_config.exists()


def test_bootstrap_refuses_a_malformed_fingerprint(
    running_ca: RunningCA, client_config: Path
) -> None:
    refused("bootstrap", "--ca-url", running_ca.url, "--fingerprint", "abc")
    assert not client_config.exists()


def test_bootstrap_refuses_a_ca_that_is_not_there(client_config: Path) -> None:
    result = refused(
        "bootstrap", "--ca-url", f"https://127.0.0.1:{free_port()}", "--fingerprint", "ab" * 32
    )
    assert "cannot reach the CA" in result.stderr
    assert not client_config.exists()


def test_bootstrap_again_for_the_same_ca_is_harmless_but_another_needs_force(
    running_ca: RunningCA, client_config: Path, tmp_path: Path
) -> None:
    ok("bootstrap", "--ca-url", running_ca.url, "--fingerprint", running_ca.fingerprint)
    ok("bootstrap", "--ca-url", running_ca.url, "--fingerprint", running_ca.fingerprint)
    other_url = f"https://localhost:{running_ca.https_port}"
    result = refused("bootstrap", "--ca-url", other_url, "--fingerprint", running_ca.fingerprint)
    assert "--force" in result.stderr
    ok("bootstrap", "--ca-url", other_url, "--fingerprint", running_ca.fingerprint, "--force")
    assert load_client_config(client_config).ca_url == other_url


def test_commands_without_bootstrap_say_how_to_get_one(client_config: Path, tmp_path: Path) -> None:
    result = refused(
        "cert", "request", "alice", tmp_path / "a.crt", tmp_path / "a.key", "--token", "x"
    )
    assert "ostiary bootstrap" in result.stderr
    assert not (tmp_path / "a.key").exists()
