"""A CA whose keys live in a SoftHSM2 token: ``ca init --kms pkcs11``, sign, CRL, serve, OCSP."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tomli_w
from cryptography import x509
from typer.testing import CliRunner, Result

from ostiary.authority.ocsp_service import TRUST_FOR, WATCH_INTERVAL
from ostiary.cli.main import app
from ostiary.core.errors import WrongPassword
from ostiary.provisioners.manage import load_jwk_provisioner
from ostiary.signers.pkcs11 import Pkcs11Token
from ostiary.store import Store
from tests.client.conftest import OSTIARY, free_port
from tests.conftest import require_tool
from tests.hsm.conftest import PIN, SoftHSM


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def ok(*args: str | Path) -> Result:
    result = run(*args)
    assert result.exit_code == 0, result.stderr + result.stdout
    return result


def refused(*args: str | Path) -> str:
    """Non-zero exit, exactly one ``error:`` line on stderr, no traceback; returns the line."""
    result = run(*args)
    assert result.exit_code != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def openssl(*args: str | Path, expect_ok: bool = True) -> str:
    done = subprocess.run(
        [require_tool("openssl"), *map(str, args)], capture_output=True, text=True
    )
    if expect_ok:
        assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def init_token_ca(
    softhsm: SoftHSM, folder: Path, token: str, *extra: str | Path, pin_file: Path | None = None
) -> Path:
    home = folder / "ca"
    ok(
        "ca", "init", "--name", "HSM", "--dir", home, "--kms", "pkcs11",
        "--pkcs11-module", softhsm.module, "--token", token,
        "--pin-file", pin_file or softhsm.pin_file(folder), *extra,
    )  # fmt: skip
    return home


def make_csr(folder: Path, name: str) -> Path:
    key, csr = folder / f"{name}.key", folder / f"{name}.csr"
    openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key, "-subj", f"/CN={name}", "-out", csr,
    )  # fmt: skip
    return csr


def no_private_key_on_disk(home: Path) -> None:
    for path in home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if path.name.startswith("ostiary.db"):  # provisioner keys, sealed (docs/hsm.md)
                assert data.count(b"PRIVATE KEY") == data.count(b"ENCRYPTED PRIVATE KEY"), path
            else:
                assert b"PRIVATE KEY" not in data, path
    assert not (home / "secrets").exists() or not any((home / "secrets").iterdir())


def test_init_sign_revoke_crl_all_through_the_token(
    softhsm: SoftHSM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = init_token_ca(softhsm, tmp_path, "cli-init")
    pin_file = softhsm.pin_file(tmp_path)
    config = tomllib.loads((home / "ostiary.toml").read_text())
    assert config["kms"] == "pkcs11"
    assert config["pkcs11"]["token"] == "cli-init"
    assert config["pkcs11"]["root_key"] == "ostiary-root"
    no_private_key_on_disk(home)
    root, intermediate = home / "certs" / "root.crt", home / "certs" / "intermediate.crt"

    token = Pkcs11Token.open(softhsm.module, "cli-init", PIN.encode())
    try:
        for label in ("ostiary-root", "ostiary-intermediate"):
            flags = token.key_attributes(label)
            assert flags["never_extractable"] and not flags["extractable"], label
            assert flags["sensitive"] and flags["always_sensitive"] and flags["token"], label
        root_public = token.signer("ostiary-root").public_key()
    finally:
        token.close()
    root_certificate = x509.load_pem_x509_certificate(root.read_bytes())
    assert root_certificate.public_key() == root_public

    # The root's self-signature and the intermediate, both made by the token.
    assert ": OK" in openssl("verify", "-check_ss_sig", "-CAfile", root, root)
    assert ": OK" in openssl("verify", "-check_ss_sig", "-CAfile", root, intermediate)

    csr = make_csr(tmp_path, "alice")
    leaf = tmp_path / "alice.crt"
    ok("ca", "sign", csr, "--out", leaf, "--san", "alice@example.com", "--dir", home,
       "--pin-file", pin_file)  # fmt: skip
    assert ": OK" in openssl(
        "verify", "-check_ss_sig", "-purpose", "sslclient", "-CAfile", root,
        "-untrusted", intermediate, leaf,
    )  # fmt: skip

    serial = x509.load_pem_x509_certificate(leaf.read_bytes()).serial_number
    ok("ca", "revoke", format(serial, "x"), "--reason", "keyCompromise", "--dir", home,
       "--pin-file", pin_file)  # fmt: skip
    crl = tmp_path / "ca.crl"
    ok("ca", "crl", "--out", crl, "--pem", "--dir", home, "--pin-file", pin_file)
    assert "verify OK" in openssl("crl", "-in", crl, "-noout", "-CAfile", intermediate)
    revoked = openssl(
        "verify", "-crl_check", "-CAfile", root, "-untrusted", intermediate, "-CRLfile", crl,
        leaf, expect_ok=False,
    )  # fmt: skip
    assert "certificate revoked" in revoked

    # Provisioner keys are sealed with a secret derived in the token, not with the PIN.
    ok("ca", "provisioner", "add", "ops", "--dir", home, "--pin-file", pin_file)
    token_value = ok(
        "ca", "token", "bob", "--provisioner", "ops", "--dir", home, "--pin-file", pin_file
    ).stdout.strip()
    assert token_value.count(".") == 2
    store = Store.from_url(f"sqlite:///{home / 'ostiary.db'}")
    try:
        with store.transaction(read_only=True) as session:
            sealed = load_jwk_provisioner(session, "ops")
    finally:
        store.dispose()
    with pytest.raises(WrongPassword):
        sealed.load_private_key(PIN.encode())

    # The wrong PIN: one line, nothing signed.
    bad = tmp_path / "bad-pin"
    bad.write_text("000000\n")
    line = refused("ca", "crl", "--out", tmp_path / "x.crl", "--dir", home, "--pin-file", bad)
    assert "wrong PIN" in line and "000000" not in line
    assert not (tmp_path / "x.crl").exists()

    # No PIN and no terminal: the option and the variable docs/hsm.md names, then the variable.
    monkeypatch.delenv("OSTIARY_PIN", raising=False)
    line = refused("ca", "crl", "--out", tmp_path / "x.crl", "--dir", home)
    assert line == "error: a PIN is needed for token 'cli-init': give --pin-file or set OSTIARY_PIN"
    assert not (tmp_path / "x.crl").exists()
    monkeypatch.setenv("OSTIARY_PIN", PIN)
    ok("ca", "crl", "--out", tmp_path / "x.crl", "--dir", home)
    no_private_key_on_disk(home)


def test_init_refusals_are_one_line_and_leave_nothing(softhsm: SoftHSM, tmp_path: Path) -> None:
    home = tmp_path / "ca"
    pin_file = softhsm.pin_file(tmp_path)
    common = ("ca", "init", "--name", "HSM", "--dir", home, "--pin-file", pin_file)
    module = ("--pkcs11-module", softhsm.module)
    assert "needs --pkcs11-module PATH and --token" in refused(*common, "--kms", "pkcs11", *module)
    assert "unknown --kms" in refused(*common, "--kms", "hsm", *module, "--token", "cli-refusals")
    assert "go with --kms pkcs11" in refused(*common, *module, "--token", "cli-refusals")
    missing = ("--pkcs11-module", tmp_path / "nope.so", "--token", "cli-refusals")
    assert "does not exist" in refused(*common, "--kms", "pkcs11", *missing)
    to_absent = (*module, "--token", "absent-token")
    assert "not present" in refused(*common, "--kms", "pkcs11", *to_absent)
    to_token = (*module, "--token", "cli-refusals")
    eddsa = refused(*common, "--kms", "pkcs11", *to_token, "--key-type", "ed25519")
    assert "cannot be made in a token" in eddsa
    bad = tmp_path / "bad"
    bad.write_text("111111\n")
    wrong = ("ca", "init", "--name", "HSM", "--dir", home, "--pin-file", bad)
    assert "wrong PIN" in refused(*wrong, "--kms", "pkcs11", *to_token)
    assert not home.exists()  # nothing was written by any refusal

    # A CA whose configuration names a token that is not there: one line, for every command.
    made = init_token_ca(softhsm, tmp_path, "cli-refusals")
    config_file = made / "ostiary.toml"
    config = tomllib.loads(config_file.read_text())
    config["pkcs11"]["token"] = "unplugged"
    config_file.write_text(tomli_w.dumps(config))
    line = refused("ca", "crl", "--out", tmp_path / "x.crl", "--dir", made, "--pin-file", pin_file)
    assert "'unplugged' is not present" in line
    config["pkcs11"]["token"] = "cli-refusals"
    config["pkcs11"]["intermediate_key"] = "ostiary-root"  # a key that does not match the cert
    config_file.write_text(tomli_w.dumps(config))
    line = refused("ca", "crl", "--out", tmp_path / "x.crl", "--dir", made, "--pin-file", pin_file)
    assert "does not match certs/intermediate.crt" in line
    config["kms"] = "file"
    config_file.write_text(tomli_w.dumps(config))
    line = refused("ca", "crl", "--out", tmp_path / "x.crl", "--dir", made, "--pin-file", pin_file)
    assert "only allowed with kms = 'pkcs11'" in line


def test_a_second_ca_on_the_same_token_needs_other_labels(softhsm: SoftHSM, tmp_path: Path) -> None:
    init_token_ca(softhsm, tmp_path / "a", "cli-labels")
    pin_file = softhsm.pin_file(tmp_path)
    home_b = tmp_path / "b" / "ca"
    args = (
        "ca", "init", "--name", "B", "--dir", home_b, "--kms", "pkcs11",
        "--pkcs11-module", softhsm.module, "--token", "cli-labels", "--pin-file", pin_file,
    )  # fmt: skip
    assert "labelled 'ostiary-root' already" in refused(*args)
    assert not home_b.exists()
    ok(*args, "--key-label-prefix", "second")
    config = tomllib.loads((home_b / "ostiary.toml").read_text())
    assert config["pkcs11"]["intermediate_key"] == "second-intermediate"
    root_a = x509.load_pem_x509_certificate((tmp_path / "a/ca/certs/root.crt").read_bytes())
    root_b = x509.load_pem_x509_certificate((home_b / "certs/root.crt").read_bytes())
    assert root_a.public_key() != root_b.public_key()


def test_an_rsa_ca_in_the_token(softhsm: SoftHSM, tmp_path: Path) -> None:
    home = init_token_ca(softhsm, tmp_path, "cli-rsa", "--key-type", "rsa2048")
    pin_file = softhsm.pin_file(tmp_path)
    root, intermediate = home / "certs" / "root.crt", home / "certs" / "intermediate.crt"
    assert "rsaEncryption" in openssl("x509", "-in", root, "-noout", "-text")
    assert ": OK" in openssl("verify", "-check_ss_sig", "-CAfile", root, root)
    leaf = tmp_path / "leaf.crt"
    ok("ca", "sign", make_csr(tmp_path, "dev"), "--out", leaf, "--dir", home,
       "--pin-file", pin_file)  # fmt: skip
    assert ": OK" in openssl(
        "verify", "-check_ss_sig", "-CAfile", root, "-untrusted", intermediate, leaf
    )  # fmt: skip
    crl = tmp_path / "ca.crl"
    ok("ca", "crl", "--out", crl, "--pem", "--dir", home, "--pin-file", pin_file)
    assert "verify OK" in openssl("crl", "-in", crl, "-noout", "-CAfile", intermediate)
    no_private_key_on_disk(home)


@pytest.fixture
def served(softhsm: SoftHSM, tmp_path: Path) -> Iterator[tuple[Path, Path, int, int]]:
    """A token CA and its ``ca serve`` (a subprocess, unlocked with --pin-file)."""
    home = init_token_ca(softhsm, tmp_path, "serve")
    pin_file = softhsm.pin_file(tmp_path)
    ok("ca", "provisioner", "add", "ops", "--dir", home, "--pin-file", pin_file)
    https_port, http_port = free_port(), free_port()
    log = (tmp_path / "server.log").open("ab")
    process = subprocess.Popen(
        [
            *OSTIARY, "ca", "serve", "--dir", str(home), "--pin-file", str(pin_file),
            "--address", f"127.0.0.1:{https_port}", "--http-address", f"127.0.0.1:{http_port}",
        ],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log,
    )  # fmt: skip
    log.close()
    try:
        for _ in range(300):
            if process.poll() is not None:
                raise RuntimeError((tmp_path / "server.log").read_text())
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/health").is_success:
                    break
            except httpx.TransportError:
                pass
            subprocess.run(["sleep", "0.1"], check=True)
        else:
            raise RuntimeError("ca serve did not start: " + (tmp_path / "server.log").read_text())
        yield home, pin_file, https_port, http_port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_ca_serve_signs_everything_through_the_token(
    served: tuple[Path, Path, int, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home, pin_file, https_port, http_port = served
    root, intermediate = home / "certs" / "root.crt", home / "certs" / "intermediate.crt"
    plain = f"http://127.0.0.1:{http_port}"

    # The server's own TLS certificate, issued at start by the token's intermediate key.
    server_pem = tmp_path / "server.crt"
    server_pem.write_text(ssl.get_server_certificate(("127.0.0.1", https_port)))
    assert ": OK" in openssl(
        "verify", "-check_ss_sig", "-purpose", "sslserver", "-CAfile", root,
        "-untrusted", intermediate, server_pem,
    )  # fmt: skip

    # The root CRL, signed at start by the token's root key; the intermediate's CRL.
    for path, issuer in (("/root.crl", root), ("/crl", intermediate)):
        der = tmp_path / path.strip("/").replace(".", "-")
        der.write_bytes(httpx.get(plain + path).raise_for_status().content)
        assert "verify OK" in openssl(
            "crl", "-inform", "DER", "-in", der, "-noout", "-CAfile", issuer
        )

    # Enrolment over the API: the leaf certificate is signed in the token.
    monkeypatch.setenv("OSTIARY_CLIENT_CONFIG", str(tmp_path / "client"))
    token = ok(
        "ca", "token", "alice", "--provisioner", "ops", "--dir", home, "--pin-file", pin_file
    ).stdout.strip()
    crt, key = tmp_path / "alice.crt", tmp_path / "alice.key"
    ok("cert", "request", "alice", crt, key, "--token", token,
       "--ca-url", f"https://127.0.0.1:{https_port}", "--root", root)  # fmt: skip
    assert ": OK" in openssl(
        "verify", "-check_ss_sig", "-purpose", "sslclient", "-CAfile", root,
        "-untrusted", intermediate, crt,
    )  # fmt: skip
    no_private_key_on_disk(home)

    # OCSP, answered by a responder certificate the token signed.
    ocsp = ("ocsp", "-issuer", intermediate, "-cert", crt, "-url", plain + "/ocsp",
            "-CAfile", root)  # fmt: skip
    answer = openssl(*ocsp, "-resp_text")
    assert "Response verify OK" in answer and ": good" in answer, answer
    # Signed by the issuing CA itself, i.e. in the token: no responder key in memory.
    issuing = x509.load_pem_x509_certificate(intermediate.read_bytes())
    key_hash = x509.SubjectKeyIdentifier.from_public_key(issuing.public_key()).digest
    assert f"Responder Id: {key_hash.hex().upper()}" in answer, answer
    serial = x509.load_pem_x509_certificate(crt.read_bytes()).serial_number
    ok("ca", "revoke", format(serial, "x"), "--dir", home, "--pin-file", pin_file)
    # Revoked by another process: the server's OCSP cache sees it at its next poll of the
    # audit log (docs/architecture.md), so within WATCH_INTERVAL, not necessarily at once.
    deadline = time.monotonic() + WATCH_INTERVAL + TRUST_FOR + 5
    answer = openssl(*ocsp)
    while ": revoked" not in answer and time.monotonic() < deadline:
        time.sleep(WATCH_INTERVAL / 5)
        answer = openssl(*ocsp)
    assert "Response verify OK" in answer and ": revoked" in answer, answer


def test_ca_serve_with_the_wrong_pin_stops_with_one_line(softhsm: SoftHSM, tmp_path: Path) -> None:
    home = init_token_ca(softhsm, tmp_path, "cli-refusals", "--key-label-prefix", "serve-pin")
    bad = tmp_path / "bad"
    bad.write_text("999999\n")
    done = subprocess.run(
        [*OSTIARY, "ca", "serve", "--dir", str(home), "--pin-file", str(bad),
         "--address", "127.0.0.1:0", "--http-address", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines == ["error: PKCS#11 token 'cli-refusals': wrong PIN for the token"], done.stderr


def test_intermediate_rotation_makes_the_new_key_in_the_token(
    softhsm: SoftHSM, tmp_path: Path
) -> None:
    """``ca intermediate rotate --kms pkcs11``: the new key is generated in the token (never
    on disk), the new intermediate signs from then on, and the CA opens again with both."""
    home = init_token_ca(softhsm, tmp_path, "cli-rotate")
    pin_file = softhsm.pin_file(tmp_path)
    refusal = refused("ca", "intermediate", "rotate", "--kms", "file", "--dir", home,
                      "--pin-file", pin_file)  # fmt: skip
    assert "pkcs11" in refusal
    ok("ca", "intermediate", "rotate", "--kms", "pkcs11", "--dir", home, "--pin-file", pin_file)
    no_private_key_on_disk(home)
    (label_file,) = (home / "certs" / "intermediates").glob("*.label")
    label = label_file.read_text().strip()
    new_intermediate = label_file.with_suffix(".crt")
    token = Pkcs11Token.open(softhsm.module, "cli-rotate", PIN.encode())
    try:
        flags = token.key_attributes(label)
        assert flags["never_extractable"] and flags["sensitive"], label
    finally:
        token.close()
    csr = make_csr(tmp_path, "bob")
    leaf = tmp_path / "bob.crt"
    ok("ca", "sign", csr, "--out", leaf, "--dir", home, "--pin-file", pin_file)
    root = home / "certs" / "root.crt"
    assert ": OK" in openssl(
        "verify", "-check_ss_sig", "-CAfile", root, "-untrusted", new_intermediate, leaf
    )  # fmt: skip
    listed = ok("ca", "intermediate", "list", "--format", "json", "--dir", home).stdout
    # The first intermediate issued nothing: with no leaves to answer for, it is retired.
    assert sorted(i["state"] for i in json.loads(listed)) == ["active", "retired"]
