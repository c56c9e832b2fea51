"""``ostiary cert request``: a key made here, a certificate from the real CA."""

from __future__ import annotations

import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ostiary.cli.cert import load_private_key_file
from ostiary.core.encoding import load_certificate_chain
from ostiary.core.names import sans_of
from tests.client.conftest import RunningCA, ok, refused
from tests.conftest import make_test_ca, require_tool


def _chain(path: Path) -> list[x509.Certificate]:
    return load_certificate_chain(path.read_bytes())


@pytest.mark.interop
def test_requested_certificate_is_accepted_by_openssl_for_client_auth(
    bootstrapped: RunningCA, client_config: Path, tmp_path: Path
) -> None:
    openssl = require_tool("openssl")
    crt, key = tmp_path / "alice.crt", tmp_path / "alice.key"
    token = bootstrapped.token("alice", "alice@example.com")
    ok("cert", "request", "alice", crt, key, "--token", token, "--san", "alice@example.com")
    result = subprocess.run(
        [
            openssl,
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            client_config / "root.crt",
            "-untrusted",
            crt,
            crt,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    chain = _chain(crt)
    assert len(chain) == 2  # the leaf and the issuing intermediate
    assert [n.value for n in sans_of(chain[0].extensions)] == ["alice@example.com"]
    assert load_private_key_file(key).public_key() == chain[0].public_key()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("kty", "key_class"),
    [
        pytest.param("p384", ec.EllipticCurvePrivateKey, id="p384"),
        pytest.param("ed25519", ed25519.Ed25519PrivateKey, id="ed25519"),
    ],
)
def test_request_makes_the_key_type_asked_for(
    bootstrapped: RunningCA, tmp_path: Path, kty: str, key_class: type
) -> None:
    crt, key = tmp_path / "k.crt", tmp_path / "k.key"
    ok("cert", "request", "dev", crt, key, "--token", bootstrapped.token("dev"), "--kty", kty)
    assert isinstance(load_private_key_file(key), key_class)


def test_request_asks_for_the_lifetime_given(
    enroll: Callable[..., tuple[Path, Path]],
) -> None:
    crt, _ = enroll("bob", not_after="2h")
    certificate = _chain(crt)[0]
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert 2 * 3600 <= lifetime.total_seconds() <= 2 * 3600 + 120


def test_request_refuses_to_overwrite_without_force(
    bootstrapped: RunningCA, enroll: Callable[..., tuple[Path, Path]]
) -> None:
    crt, key = enroll("carol")
    before = crt.read_bytes(), key.read_bytes()
    result = refused("cert", "request", "carol", crt, key, "--token", bootstrapped.token("carol"))
    assert "--force" in result.stderr
    assert (crt.read_bytes(), key.read_bytes()) == before
    ok("cert", "request", "carol", crt, key, "--token", bootstrapped.token("carol"), "--force")
    assert crt.read_bytes() != before[0]


def test_a_reused_token_is_refused_and_writes_nothing(
    bootstrapped: RunningCA, tmp_path: Path
) -> None:
    token = bootstrapped.token("dave")
    ok("cert", "request", "dave", tmp_path / "1.crt", tmp_path / "1.key", "--token", token)
    result = refused(
        "cert", "request", "dave", tmp_path / "2.crt", tmp_path / "2.key", "--token", token
    )
    assert "already used" in result.stderr
    assert not (tmp_path / "2.crt").exists()
    assert not (tmp_path / "2.key").exists()


def test_a_name_outside_the_token_is_refused(bootstrapped: RunningCA, tmp_path: Path) -> None:
    token = bootstrapped.token("erin", "erin@example.com")
    refused(
        "cert",
        "request",
        "erin",
        tmp_path / "e.crt",
        tmp_path / "e.key",
        "--token",
        token,
        "--san",
        "mallory@example.com",
    )
    assert not (tmp_path / "e.key").exists()


def test_request_with_explicit_ca_url_and_root_needs_no_bootstrap(
    running_ca: RunningCA, client_config: Path, tmp_path: Path
) -> None:
    crt, key = tmp_path / "f.crt", tmp_path / "f.key"
    ok(
        "cert",
        "request",
        "frank",
        crt,
        key,
        "--token",
        running_ca.token("frank"),
        "--ca-url",
        running_ca.url,
        "--root",
        running_ca.root_file,
    )
    assert not client_config.exists()


def test_request_refuses_a_server_under_another_root(
    running_ca: RunningCA, client_config: Path, tmp_path: Path
) -> None:
    other_root = tmp_path / "other-root.crt"
    other_root.write_bytes(make_test_ca().root.public_bytes(serialization.Encoding.PEM))
    result = refused(
        "cert",
        "request",
        "gina",
        tmp_path / "g.crt",
        tmp_path / "g.key",
        "--token",
        running_ca.token("gina"),
        "--ca-url",
        running_ca.url,
        "--root",
        other_root,
    )
    assert "not trusted" in result.stderr
    assert not (tmp_path / "g.key").exists()


def test_request_without_subject_gets_the_one_the_token_names(
    bootstrapped: RunningCA, client_config: Path, tmp_path: Path
) -> None:
    crt, key = tmp_path / "erin.crt", tmp_path / "erin.key"
    token = bootstrapped.token("erin", "erin@example.com")
    ok("cert", "request", crt, key, "--token", token)
    certificate = _chain(crt)[0]
    assert certificate.subject.rfc4514_string() == "CN=erin"
    assert [n.value for n in sans_of(certificate.extensions)] == ["erin@example.com"]
    # Its twins: a SUBJECT other than the token's is refused; so is a lone file.
    other = bootstrapped.token("erin", "erin@example.com")
    elsewhere = tmp_path / "mallory.crt", tmp_path / "mallory.key"
    assert "not authorized" in refused("cert", "request", "mallory", *elsewhere,
                                       "--token", other).stderr  # fmt: skip
    assert "[SUBJECT] CRT KEY" in refused("cert", "request", crt, "--token", other).stderr
    assert not elsewhere[0].exists() and not elsewhere[1].exists()
