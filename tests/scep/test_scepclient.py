"""micromdm's ``scepclient`` (Debian ``scep``) against ``ostiary ca serve``.

It sends single DES + SHA-1 over POST, encrypts to every certificate GetCACert returns (so
the whole chain is RSA here: it panics on an EC one) and writes ``csr.pem``/``self.pem`` in
its working directory, hence a fresh directory per run.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.conftest import require_tool
from tests.pkilint_helper import lint_certificate
from tests.scep.conftest import ScepServer


def _scepclient(
    server: ScepServer, folder: Path, cn: str, challenge: str | None, *extra: str
) -> subprocess.CompletedProcess[str]:
    folder.mkdir(exist_ok=True)
    command = [
        require_tool("scepclient"), "-server-url", server.url("devices"),
        "-private-key", "key.pem", "-certificate", "cert.pem", "-cn", cn, *extra,
    ]  # fmt: skip
    if challenge is not None:
        command += ["-challenge", challenge]
    return subprocess.run(
        command, cwd=folder, capture_output=True, text=True, timeout=120, check=False
    )


def _verify(server: ScepServer, folder: Path, certificate: Path) -> None:
    pem = serialization.Encoding.PEM
    _, *cas = server.ca_certs("devices")
    root = next(c for c in cas if c.issuer == c.subject)
    intermediate = next(c for c in cas if c.issuer != c.subject)
    (folder / "root.pem").write_bytes(root.public_bytes(pem))
    (folder / "chain.pem").write_bytes(intermediate.public_bytes(pem))
    result = subprocess.run(
        [require_tool("openssl"), "verify", "-purpose", "sslclient", "-CAfile", "root.pem",
         "-untrusted", "chain.pem", str(certificate)],
        cwd=folder, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0 and ": OK" in result.stdout, result.stdout + result.stderr
    issued = x509.load_pem_x509_certificate(certificate.read_bytes())
    assert lint_certificate(issued.public_bytes(serialization.Encoding.DER)) == []


def test_scepclient_enrolls_with_a_one_time_challenge(rsa_ca: ScepServer, tmp_path: Path) -> None:
    challenge = rsa_ca.challenge("devices", "laptop-7", "dns:laptop-7.corp.example")
    result = _scepclient(rsa_ca, tmp_path / "run", "laptop-7", challenge)
    assert result.returncode == 0, result.stdout + result.stderr
    certificate_file = tmp_path / "run" / "cert.pem"
    issued = x509.load_pem_x509_certificate(certificate_file.read_bytes())
    # the names are the challenge's: its CN and SAN, not scepclient's O/OU/C
    assert issued.subject.rfc4514_string() == "CN=laptop-7"
    sans = issued.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["laptop-7.corp.example"]
    eku = issued.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    _verify(rsa_ca, tmp_path / "run", certificate_file)

    # scepclient's transactionID is its key's hash and it reuses its CSR: a second run is
    # the same transaction and gets the same certificate, nothing new is issued
    before = rsa_ca.count_certificates()
    again = _scepclient(rsa_ca, tmp_path / "run", "laptop-7", None)
    assert again.returncode == 0, again.stdout + again.stderr
    assert x509.load_pem_x509_certificate(certificate_file.read_bytes()) == issued
    assert rsa_ca.count_certificates() == before


def test_scepclient_wrong_challenge_is_bad_request(rsa_ca: ScepServer, tmp_path: Path) -> None:
    rsa_ca.challenge("devices", "laptop-8")
    before = rsa_ca.count_certificates()
    result = _scepclient(rsa_ca, tmp_path / "run", "laptop-8", "not-the-challenge")
    assert result.returncode != 0
    assert "badRequest" in result.stdout + result.stderr
    assert not (tmp_path / "run" / "cert.pem").exists()
    assert rsa_ca.count_certificates() == before


def test_scepclient_reused_challenge_is_refused(rsa_ca: ScepServer, tmp_path: Path) -> None:
    challenge = rsa_ca.challenge("devices", "laptop-9")
    first = _scepclient(rsa_ca, tmp_path / "first", "laptop-9", challenge)
    assert first.returncode == 0, first.stdout + first.stderr
    before = rsa_ca.count_certificates()
    second = _scepclient(rsa_ca, tmp_path / "second", "laptop-9", challenge)
    assert second.returncode != 0
    assert "badRequest" in second.stdout + second.stderr
    assert rsa_ca.count_certificates() == before


def test_scepclient_1024_bit_key_is_refused(rsa_ca: ScepServer, tmp_path: Path) -> None:
    challenge = rsa_ca.challenge("devices", "old-phone")
    before = rsa_ca.count_certificates()
    result = _scepclient(rsa_ca, tmp_path / "run", "old-phone", challenge, "-keySize", "1024")
    assert result.returncode != 0
    assert "badRequest" in result.stdout + result.stderr
    assert rsa_ca.count_certificates() == before
    assert "1024 bits" in rsa_ca.serve.log.read_text()  # the reason is logged
    # the refused request did not spend the challenge: a 2048-bit key then enrolls
    again = _scepclient(rsa_ca, tmp_path / "again", "old-phone", challenge)
    assert again.returncode == 0, again.stdout + again.stderr
