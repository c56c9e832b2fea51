"""``ostiary gateway run --renew``: the gateway keeps its own short-lived certificate renewed
from our CA server, and new handshakes present the renewed one while open connections go on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from ostiary.store import CertificateRepository
from tests.gateway.conftest import CA, EchoUpstream, free_port, served_certificate, wait_for_port


@pytest.mark.slow
def test_gateway_renews_its_own_certificate(ca: CA, upstream: EchoUpstream, tmp_path: Path) -> None:
    short = ca.issue(
        "localhost", ("dns:localhost",), profile="server", lifetime=timedelta(minutes=6)
    )
    cert, key = tmp_path / "gw.crt", tmp_path / "gw.key"
    cert.write_bytes(short.cert_file.read_bytes())
    key.write_bytes(short.key_file.read_bytes())
    key.chmod(0o600)
    alice = ca.issue("alice", ("email:alice@example.com",))
    port = free_port()
    log = (tmp_path / "gateway.log").open("wb")
    config = tmp_path / "gateway.toml"
    config.write_text("reload_interval_seconds = 0.2\nrevocation_cache_seconds = 0.5\n")
    gateway = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ostiary"),
            "gateway",
            "run",
            "--config",
            str(config),
            "--listen",
            f"127.0.0.1:{port}",
            "--upstream",
            f"http://127.0.0.1:{upstream.port}",
            "--ca-root",
            str(ca.ca_file),
            "--cert",
            str(cert),
            "--key",
            str(key),
            "--renew",
            "--renew-ca-url",
            ca.running.server.https_url,
            "--renew-root",
            str(ca.root_file),
            "--renew-expires-in",
            "5m30s",  # due 12-30 s from now (jitter moves it up to 18 s earlier)
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    try:
        wait_for_port(port)
        assert (
            served_certificate(ca, alice, port, "localhost").serial_number
            == short.certificate.serial_number
        )
        with ca.client(alice, port, host="localhost") as kept:
            assert kept.get("/").status_code == 200
            deadline = time.monotonic() + 45
            while True:
                served = served_certificate(ca, alice, port, "localhost")
                if served.serial_number != short.certificate.serial_number:
                    break
                assert time.monotonic() < deadline, (tmp_path / "gateway.log").read_text()
                time.sleep(0.5)
            assert kept.get("/").status_code == 200, "an open connection keeps going"
        assert served.subject == short.certificate.subject
        assert served.public_key() == short.certificate.public_key()  # the key is kept
        assert served.not_valid_after_utc > short.certificate.not_valid_after_utc
        assert x509.load_pem_x509_certificates(cert.read_bytes())[0] == served
        with ca.authority.store.transaction() as session:  # the CA recorded its renewal
            assert CertificateRepository(session).get(served.serial_number) is not None
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(15)
        log.close()
    assert gateway.returncode == 0, (tmp_path / "gateway.log").read_text()
