"""Fingerprints as people paste them; the client configuration's round trip and tamper check."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes

from ostiary.client.config import (
    CLIENT_CONFIG_FILE,
    ROOT_FILE,
    ClientConfig,
    client_config_dir,
    load_client_config,
    normalize_ca_url,
)
from ostiary.client.fingerprints import fingerprint_matches, normalize_fingerprint
from ostiary.core.errors import BadRequest, InvalidCertificate, NotFound
from tests.conftest import TestCA, make_test_ca


def _forms(hex_digest: str) -> list[str]:
    pairs = [hex_digest[i : i + 2] for i in range(0, 64, 2)]
    return [
        hex_digest,
        hex_digest.upper(),
        ":".join(pairs).upper(),
        " ".join(pairs),
        f"SHA256 Fingerprint={':'.join(pairs).upper()}",
        f"sha256:{hex_digest}",
    ]


def test_every_usual_spelling_of_the_fingerprint_matches(test_ca: TestCA) -> None:
    digest = test_ca.root.fingerprint(hashes.SHA256()).hex()
    for form in _forms(digest):
        assert normalize_fingerprint(form) == digest
        assert fingerprint_matches(test_ca.root, form)


def test_another_roots_fingerprint_does_not_match(test_ca: TestCA) -> None:
    other = make_test_ca().root.fingerprint(hashes.SHA256()).hex()
    assert not fingerprint_matches(test_ca.root, other)
    one_digit_off = test_ca.root.fingerprint(hashes.SHA256()).hex()[:-1] + "0"
    if one_digit_off != test_ca.root.fingerprint(hashes.SHA256()).hex():
        assert not fingerprint_matches(test_ca.root, one_digit_off)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="fail/empty"),
        pytest.param("ab" * 31, id="fail/too-short"),
        pytest.param("ab" * 33, id="fail/too-long"),
        pytest.param("zz" * 32, id="fail/not-hex"),
        pytest.param("sha1:" + "ab" * 20, id="fail/sha1"),
    ],
)
def test_malformed_fingerprints_are_refused(text: str) -> None:
    with pytest.raises(BadRequest, match="SHA-256"):
        normalize_fingerprint(text)


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        pytest.param("https://ca.lan:8443/", "https://ca.lan:8443", id="ok/trailing-slash"),
        pytest.param(" https://ca.lan ", "https://ca.lan", id="ok/spaces"),
    ],
)
def test_ca_urls_are_normalized(url: str, normal: str) -> None:
    assert normalize_ca_url(url) == normal


@pytest.mark.parametrize("url", ["http://ca.lan", "ca.lan:8443", "https://", "ftp://ca"])
def test_ca_urls_without_https_are_refused(url: str) -> None:
    with pytest.raises(BadRequest, match="https"):
        normalize_ca_url(url)


def _save(config: ClientConfig, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ROOT_FILE).write_bytes(config.dump_root())
    (folder / CLIENT_CONFIG_FILE).write_text(config.dump_settings())


def test_config_round_trip(test_ca: TestCA, tmp_path: Path) -> None:
    config = ClientConfig("https://ca.lan:8443", test_ca.root)
    _save(config, tmp_path)
    assert load_client_config(tmp_path) == config


def test_a_root_swapped_on_disk_is_refused(test_ca: TestCA, tmp_path: Path) -> None:
    _save(ClientConfig("https://ca.lan:8443", test_ca.root), tmp_path)
    (tmp_path / ROOT_FILE).write_bytes(ClientConfig("https://x", make_test_ca().root).dump_root())
    with pytest.raises(InvalidCertificate, match="fingerprint differs"):
        load_client_config(tmp_path)


def test_missing_config_says_to_bootstrap(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="ostiary bootstrap"):
        load_client_config(tmp_path / "nothing")


def test_broken_config_is_one_clear_error(test_ca: TestCA, tmp_path: Path) -> None:
    _save(ClientConfig("https://ca.lan:8443", test_ca.root), tmp_path)
    (tmp_path / CLIENT_CONFIG_FILE).write_text('ca_url = "http://plain"\nfingerprint = "00"\n')
    with pytest.raises(BadRequest, match="ca_url"):
        load_client_config(tmp_path)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({"OSTIARY_CLIENT_CONFIG": "/cfg/o"}, "/cfg/o", id="explicit"),
        pytest.param({"XDG_CONFIG_HOME": "/xdg"}, "/xdg/ostiary", id="xdg"),
        pytest.param({"HOME": "/home/u"}, "/home/u/.config/ostiary", id="home"),
    ],
)
def test_config_folder_follows_the_environment(
    env: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OSTIARY_CLIENT_CONFIG", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert client_config_dir() == Path(expected)
