"""openssl as an independent relying party: OCSP over HTTP and CRL checking from the CDP."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.conftest import require_tool
from tests.server.conftest import Running

pytestmark = pytest.mark.interop


def pem(path: Path, *objects: x509.Certificate | x509.CertificateRevocationList) -> Path:
    path.write_bytes(b"".join(o.public_bytes(serialization.Encoding.PEM) for o in objects))
    return path


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("openssl"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def revoke(running: Running, certificate: x509.Certificate) -> None:
    with running.client() as client:
        answer = client.post(
            "/revoke",
            json={"serial_number": f"{certificate.serial_number:x}", "reason": "keyCompromise"},
            headers={"authorization": f"Bearer {running.admin_token()}"},
        )
    assert answer.status_code == 200, answer.text


def test_openssl_ocsp_says_good_then_revoked(running: Running, tmp_path: Path) -> None:
    alice = running.enroll("alice@example.com", ["alice@example.com"]).certificate
    material = running.authority.ca
    ocsp_url = next(
        d.access_location.value
        for d in alice.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        if d.access_method == x509.oid.AuthorityInformationAccessOID.OCSP
    )
    files = {
        "cert": pem(tmp_path / "alice.pem", alice),
        "issuer": pem(tmp_path / "intermediate.pem", material.intermediate),
        "root": pem(tmp_path / "root.pem", material.root),
    }

    def ask() -> subprocess.CompletedProcess[str]:
        return openssl(
            "ocsp",
            "-issuer", files["issuer"],
            "-cert", files["cert"],
            "-url", ocsp_url,
            "-CAfile", files["root"],
            "-verify_other", files["issuer"],
        )  # fmt: skip

    before = ask()
    assert before.returncode == 0, before.stderr
    assert "Response verify OK" in before.stderr
    assert f"{files['cert']}: good" in before.stdout
    revoke(running, alice)
    after = ask()
    assert after.returncode == 0, after.stderr
    assert f"{files['cert']}: revoked" in after.stdout
    assert "Reason: keyCompromise" in after.stdout


def test_openssl_rejects_the_revoked_certificate_with_the_crl_from_its_cdp(
    running: Running, tmp_path: Path
) -> None:
    alice = running.enroll("alice@example.com", ["alice@example.com"]).certificate
    material = running.authority.ca
    cdp = alice.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    crl_url = cdp[0].full_name[0].value
    root = pem(tmp_path / "root.pem", material.root)
    intermediate = pem(tmp_path / "intermediate.pem", material.intermediate)
    leaf = pem(tmp_path / "alice.pem", alice)

    def verify() -> subprocess.CompletedProcess[str]:
        crl = x509.load_der_x509_crl(httpx.get(crl_url).content)
        crl_file = pem(tmp_path / "crl.pem", crl)
        return openssl(
            "verify", "-crl_check", "-CAfile", root, "-untrusted", intermediate,
            "-CRLfile", crl_file, leaf,
        )  # fmt: skip

    good = verify()
    assert good.returncode == 0, good.stdout + good.stderr
    revoke(running, alice)
    bad = verify()
    assert bad.returncode != 0
    assert "certificate revoked" in bad.stdout + bad.stderr
