"""Our client follows ARI (RFC 9773): ``cert request --acme`` enrolls, ``cert renew`` and the
renew daemon ask ``renewalInfo`` and renew over ACME with ``replaces`` once the CA pulls
the window forward (``ca acme renew-early``).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from tests.acme.conftest import AcmeServer
from tests.client.conftest import ok

pytestmark = pytest.mark.slow


def leaf(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


def test_the_renew_daemon_follows_renew_early_and_replaces(
    own_acme_server: AcmeServer, tmp_path: Path
) -> None:
    crt, key = tmp_path / "host.crt", tmp_path / "host.key"
    ok("cert", "request", "localhost", crt, key, "--san", "dns:localhost",
       "--acme", own_acme_server.directory(), "--root", own_acme_server.root_file,
       "--http-01-port", str(own_acme_server.http_port),
       "--http-01-address", "127.0.0.1")  # fmt: skip
    enrollment = tmp_path / "host.crt.acme.json"
    assert stat.S_IMODE(enrollment.stat().st_mode) == 0o600
    old = leaf(crt)

    # Fresh: the CA's window (two thirds in) and the usual rule agree it is not due.
    not_due = ok("cert", "renew", crt, key)
    assert "not due" in not_due.stderr
    assert leaf(crt).serial_number == old.serial_number

    ok("ca", "acme", "renew-early", "--serial", f"{old.serial_number:x}",
       "--dir", own_acme_server.folder.paths.root)  # fmt: skip

    log = tmp_path / "daemon.log"
    with log.open("wb") as output:
        daemon = subprocess.Popen(
            [sys.executable, "-c", "from ostiary.cli.main import main; main()",
             "cert", "renew", str(crt), str(key), "--daemon"],
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while leaf(crt).serial_number == old.serial_number:
            assert daemon.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=30)
    new = leaf(crt)
    assert own_acme_server.renewed_from(new) == f"{old.serial_number:x}"
    assert "replaces" in log.read_text()
    assert new.public_key() == old.public_key()  # the key is kept (no --rekey)
