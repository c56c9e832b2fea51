"""lego (Debian) against Ostiary's ACME: http-01, its own CSR (``--csr``), revoke."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.acme.conftest import AcmeServer
from tests.acme.test_certbot import status_of
from tests.conftest import require_tool

pytestmark = pytest.mark.slow


def run_lego(
    server: AcmeServer,
    home: Path,
    provisioner: str,
    *args: str,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """lego with an account in ``home`` against ``provisioner``, whatever its exit status."""
    command = [
        require_tool("lego"),
        "--server",
        server.directory(provisioner),
        "--path",
        str(home),
        "--accept-tos",
        "--email",
        "ops@example.com",
        *args,
    ]
    environment = {**os.environ, "LEGO_CA_CERTIFICATES": str(server.root_file), **(env or {})}
    return subprocess.run(
        command, capture_output=True, text=True, env=environment, timeout=120, check=False
    )


def lego(
    server: AcmeServer, home: Path, *args: str, provisioner: str = "acme"
) -> subprocess.CompletedProcess[str]:
    """lego answering http-01 on the server's validation port; the test fails if lego does."""
    http = ("--http", "--http.port", f"127.0.0.1:{server.http_port}")
    done = run_lego(server, home, provisioner, *http, *args)
    if done.returncode != 0:
        pytest.fail(f"lego {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def test_lego_issues_with_http01_and_with_its_own_csr_and_revokes(
    own_acme_server: AcmeServer, tmp_path: Path
) -> None:
    home = tmp_path / "lego"
    lego(own_acme_server, home, "-d", "localhost", "run")
    issued = x509.load_pem_x509_certificates(
        (home / "certificates" / "localhost.crt").read_bytes()
    )[0]
    sans = issued.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "vm")]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("vm")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    csr_file = tmp_path / "vm.csr"
    csr_file.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    lego(own_acme_server, home, "--csr", str(csr_file), "run")
    own = x509.load_pem_x509_certificates((home / "certificates" / "vm.crt").read_bytes())[0]
    assert own.public_key() == key.public_key()

    lego(own_acme_server, home, "-d", "localhost", "revoke", "--reason", "1")
    assert status_of(own_acme_server, issued) == "revoked"
    assert status_of(own_acme_server, own) == "valid"


def test_lego_registers_with_an_eab_key_and_orders_within_its_names(
    own_acme_server: AcmeServer, tmp_path: Path
) -> None:
    made = own_acme_server.eab_key(names=("localhost",))
    eab = ("--eab", "--kid", made.kid, "--hmac", made.hmac_key)
    home = tmp_path / "lego-eab"
    lego(own_acme_server, home, *eab, "-d", "localhost", "run", provisioner="eab")
    issued = x509.load_pem_x509_certificates(
        (home / "certificates" / "localhost.crt").read_bytes()
    )[0]
    assert status_of(own_acme_server, issued) == "valid"
