"""``ostiary cert request --acme`` against Debian's pebble (an RFC 8555 server), with
pebble-challtestsrv as its DNS server: http-01 answered by our client, External Account
Binding required. And the rejected twins: a wrong EAB key, no EAB, a challenge nobody can
answer, options that do not go with --acme.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.acme_validation.conftest import ChallTestSrv, free_port, wait_listening
from tests.client.conftest import ok, refused
from tests.conftest import require_tool
from tests.loopback_tls import loopback_tls_files

EAB_KID = "kid-1"


@dataclass
class Pebble:
    directory: str
    root_file: Path
    http_port: int
    eab_key: str


@pytest.fixture(scope="module")
def pebble(
    challtestsrv: ChallTestSrv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pebble]:
    tool = require_tool("pebble")
    folder = tmp_path_factory.mktemp("pebble")
    root_file, cert, key = loopback_tls_files(folder)
    port, management, http_port = free_port(), free_port(), free_port()
    eab_key = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    config = folder / "pebble.json"
    config.write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{port}", "managementListenAddress": f"127.0.0.1:{management}",
        "certificate": str(cert), "privateKey": str(key), "httpPort": http_port,
        "tlsPort": free_port(), "ocspResponderURL": "",
        "externalAccountBindingRequired": True, "externalAccountMACKeys": {EAB_KID: eab_key},
    }}))  # fmt: skip
    log = folder / "pebble.log"
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [tool, "-config", str(config), "-dnsserver", f"127.0.0.1:{challtestsrv.dns_port}"],
            stdout=out, stderr=out, env=env,
        )  # fmt: skip
    try:
        wait_listening(port, process, log)
        yield Pebble(f"https://127.0.0.1:{port}/dir", root_file, http_port, eab_key)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _acme(pebble: Pebble, tmp_path: Path, hmac_key: str | None = None) -> list[str | Path]:
    hmac_file = tmp_path / "eab.key"
    hmac_file.write_text((pebble.eab_key if hmac_key is None else hmac_key) + "\n")
    return ["--acme", pebble.directory, "--root", pebble.root_file,
            "--http-01-port", str(pebble.http_port), "--http-01-address", "127.0.0.1",
            "--eab-kid", EAB_KID, "--eab-hmac-file", hmac_file]  # fmt: skip


def test_cert_request_over_acme_answers_http01_and_writes_the_chain(
    pebble: Pebble, tmp_path: Path
) -> None:
    crt, key = tmp_path / "host.crt", tmp_path / "host.key"
    name = f"{secrets.token_hex(4)}.acme.example"
    ok("cert", "request", name, crt, key, "--san", f"dns:{name}", *_acme(pebble, tmp_path))
    chain = x509.load_pem_x509_certificates(crt.read_bytes())
    san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [name]
    private_key = serialization.load_pem_private_key(key.read_bytes(), None)
    assert private_key.public_key() == chain[0].public_key()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(chain) >= 2  # the leaf and pebble's intermediate


def test_wrong_eab_key_is_refused_and_nothing_is_written(pebble: Pebble, tmp_path: Path) -> None:
    crt, key = tmp_path / "host.crt", tmp_path / "host.key"
    wrong = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    result = refused("cert", "request", "w.acme.example", crt, key,
                     *_acme(pebble, tmp_path, hmac_key=wrong))  # fmt: skip
    assert "the ACME server refused" in result.stderr
    assert not crt.exists() and not key.exists()


def test_without_eab_the_server_that_requires_it_refuses(pebble: Pebble, tmp_path: Path) -> None:
    crt, key = tmp_path / "host.crt", tmp_path / "host.key"
    options = _acme(pebble, tmp_path)[:8]  # without --eab-kid/--eab-hmac-file
    result = refused("cert", "request", "n.acme.example", crt, key, *options)
    assert "the ACME server refused" in result.stderr
    assert not crt.exists() and not key.exists()


def test_challenge_nobody_answers_fails_the_order_in_one_line(
    pebble: Pebble, tmp_path: Path
) -> None:
    crt, key = tmp_path / "host.crt", tmp_path / "host.key"
    options = _acme(pebble, tmp_path)
    options[options.index("--http-01-port") + 1] = str(free_port())  # not where pebble looks
    result = refused("cert", "request", "x.acme.example", crt, key, *options)
    assert "could not validate: x.acme.example" in result.stderr
    assert not crt.exists() and not key.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(["--token", "t"], "--acme takes SUBJECT CRT KEY", id="fail/token"),
        pytest.param(["--p12", "x.p12"], "--acme takes SUBJECT CRT KEY", id="fail/p12"),
        pytest.param(["--attest-key", "ak.pem"], "go with --key-store tpm", id="fail/ak-no-tpm"),
        pytest.param(["--key-store", "hsm"], "--key-store must be", id="fail/key-store"),
    ],
)
def test_options_of_other_doors_do_not_go_with_acme(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    result = refused("cert", "request", "a.example", tmp_path / "c", tmp_path / "k",
                     "--acme", "https://127.0.0.1:1/dir", *extra)  # fmt: skip
    assert message in result.stderr


def test_eab_kid_without_its_key_is_refused(tmp_path: Path) -> None:
    result = refused("cert", "request", "a.example", tmp_path / "c", tmp_path / "k",
                     "--acme", "https://127.0.0.1:1/dir", "--eab-kid", "k")  # fmt: skip
    assert "needs both --eab-kid and --eab-hmac-file" in result.stderr


def test_unreachable_acme_server_is_one_line(tmp_path: Path) -> None:
    url = f"https://127.0.0.1:{free_port()}/dir"
    result = refused("cert", "request", "a.example", tmp_path / "c", tmp_path / "k",
                     "--acme", url)  # fmt: skip
    assert "cannot reach the ACME server" in result.stderr
