"""``ostiary cert request SUBJECT CRT --csr FILE --provisioner <oidc>``: a CSR made by openssl
with a key the client never sees, enrolled by signing in; only the certificate comes back."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.console.test_csr_enrollment import openssl_csr

from ..client.conftest import RunningCA
from .conftest import CONFIDENTIAL, Provider
from .sign_in_cli import Request, start_cert_request
from .test_enroll import _names


def _request_csr(ca: RunningCA, folder: Path, subject: str, csr: Path) -> Request:
    return start_cert_request(
        ca, [subject, str(folder / "user.crt"), "--csr", str(csr), "--provisioner", CONFIDENTIAL]
    )


def test_a_csr_made_elsewhere_gets_a_certificate_by_signing_in(
    oidc_ca: RunningCA, provider: Provider, tmp_path: Path
) -> None:
    provider.set_user(
        "carol", email="carol@corp.example", email_verified=True, upn="carol@corp.example"
    )
    key, csr = openssl_csr(tmp_path, "carol@corp.example")
    request = _request_csr(oidc_ca, tmp_path, "carol@corp.example", csr)
    provider.sign_in(request.url, "carol")
    code, err = request.finish()
    assert code == 0, err
    certificate = x509.load_pem_x509_certificates((tmp_path / "user.crt").read_bytes())[0]
    private_key = serialization.load_pem_private_key(key.read_bytes(), None)
    assert certificate.public_key() == private_key.public_key()
    assert _names(tmp_path / "user.crt") == ["upn:carol@corp.example", "email:carol@corp.example"]
    assert not (tmp_path / "user.key").exists()
