"""``ostiary ca enroll-profile apple``: the signed .mobileconfig an MDM admin uploads.

No iPhone is here: the profile is parsed with plistlib and every payload field checked, its
CMS signature verified by openssl, and its one-time SCEP challenge used by micromdm's
``scepclient`` (Debian ``scep``), which must work once and only once.
"""

from __future__ import annotations

import plistlib
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID

from ostiary.core.names import UPN_OID, decode_other_name
from tests.conftest import require_tool
from tests.pkilint_helper import lint_certificate
from tests.scep.conftest import ScepServer, _is_ca, ostiary
from tests.scep.test_scepclient import _scepclient

ALICE = "alice@corp.example"
SIGNED_ATTRS = ("PayloadType", "PayloadVersion", "PayloadIdentifier", "PayloadUUID")


def _verify(signed: Path, ca_file: Path, folder: Path) -> dict[str, Any]:
    """``openssl smime -verify`` the profile against ``ca_file``; the plist it carries."""
    plist = folder / f"{signed.stem}.plist"
    result = subprocess.run(
        [require_tool("openssl"), "smime", "-verify", "-inform", "DER", "-in", str(signed),
         "-CAfile", str(ca_file), "-out", str(plist)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0 and "Verification successful" in result.stderr, result.stderr
    document: dict[str, Any] = plistlib.loads(plist.read_bytes())
    return document


def _profile(server: ScepServer, out: Path, *extra: str) -> str:
    return ostiary(
        server.home, "ca", "enroll-profile", "apple", "--provisioner", "users", "--out",
        str(out), "--subject", ALICE, "--san", f"email:{ALICE}", "--san", f"upn:{ALICE}",
        "--password-file", str(server.password_file), *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def signed(rsa_ca: ScepServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("profile") / "alice.mobileconfig"
    _profile(rsa_ca, out, "--exchange-host", "mail.corp.example")
    return out


@pytest.fixture(scope="module")
def profile(rsa_ca: ScepServer, signed: Path) -> dict[str, Any]:
    return _verify(signed, rsa_ca.home / "certs" / "root.crt", signed.parent)


def test_profile_is_signed_by_a_profile_signing_certificate_of_our_ca(signed: Path) -> None:
    certificates = pkcs7.load_der_pkcs7_certificates(signed.read_bytes())
    signer = next(c for c in certificates if not _is_ca(c))
    assert signer.subject.rfc4514_string() == "CN=Scep Test Root CA configuration profiles"
    eku = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.EMAIL_PROTECTION]
    usage = signer.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_encipherment
    assert isinstance(signer.public_key(), rsa.RSAPublicKey)
    assert signer.public_key().key_size == 2048
    assert lint_certificate(signer.public_bytes(serialization.Encoding.DER)) == []


def test_profile_payloads_carry_root_scep_and_exchange(
    rsa_ca: ScepServer, profile: dict[str, Any]
) -> None:
    assert profile["PayloadType"] == "Configuration"
    assert profile["PayloadVersion"] == 1
    assert profile["PayloadIdentifier"] == "org.ostiary.enroll.users"
    assert profile["PayloadOrganization"] == "Scep Test Root CA"
    assert profile["PayloadRemovalDisallowed"] is False
    root_payload, scep, exchange = profile["PayloadContent"]
    for payload in (root_payload, scep, exchange):
        assert all(payload[key] for key in SIGNED_ATTRS)
        assert payload["PayloadIdentifier"].startswith("org.ostiary.enroll.users.")
    uuids = {p["PayloadUUID"] for p in (profile, root_payload, scep, exchange)}
    assert len(uuids) == 4

    assert root_payload["PayloadType"] == "com.apple.security.root"
    root_der = (rsa_ca.home / "certs" / "root.crt").read_bytes()
    root = x509.load_pem_x509_certificate(root_der)
    assert root_payload["PayloadContent"] == root.public_bytes(serialization.Encoding.DER)

    assert scep["PayloadType"] == "com.apple.security.scep"
    content = scep["PayloadContent"]
    assert content["URL"].startswith("http://") and content["URL"].endswith("/scep/users")
    assert content["Name"] == "Scep Test Root CA"
    assert content["Subject"] == [[["CN", ALICE]]]
    assert content["SubjectAltName"] == {"rfc822Name": ALICE, "ntPrincipalName": ALICE}
    assert content["Keysize"] == 2048 and content["Key Type"] == "RSA"
    assert content["Key Usage"] == 1
    assert content["KeyIsExtractable"] is False
    assert content["Retries"] == 3 and content["RetryDelay"] == 10
    assert len(content["Challenge"]) == 40

    assert exchange["PayloadType"] == "com.apple.eas.account"
    assert exchange["Host"] == "mail.corp.example" and exchange["SSL"] is True
    assert exchange["EmailAddress"] == ALICE and exchange["UserName"] == ALICE
    assert exchange["PayloadCertificateUUID"] == scep["PayloadUUID"]


def test_profile_challenge_enrolls_once_with_scepclient(
    rsa_ca: ScepServer, profile: dict[str, Any], tmp_path: Path
) -> None:
    challenge = profile["PayloadContent"][1]["PayloadContent"]["Challenge"]
    first = _scepclient(rsa_ca, tmp_path / "first", ALICE, challenge, "-server-url",
                        rsa_ca.url("users"))  # fmt: skip
    assert first.returncode == 0, first.stdout + first.stderr
    issued = x509.load_pem_x509_certificate((tmp_path / "first" / "cert.pem").read_bytes())
    assert issued.subject.rfc4514_string() == f"CN={ALICE}"
    sans = issued.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.RFC822Name) == [ALICE]
    upns = [decode_other_name(n) for n in sans if isinstance(n, x509.OtherName)]
    assert upns == [ALICE] and all(
        n.type_id == UPN_OID for n in sans if isinstance(n, x509.OtherName)
    )

    before = rsa_ca.count_certificates()
    second = _scepclient(rsa_ca, tmp_path / "second", ALICE, challenge, "-server-url",
                         rsa_ca.url("users"))  # fmt: skip
    assert second.returncode != 0
    assert "badRequest" in second.stdout + second.stderr
    assert rsa_ca.count_certificates() == before


def test_profile_signed_with_the_admins_certificate(rsa_ca: ScepServer, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "mdm.corp.example")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = tmp_path / "mdm.crt", tmp_path / "mdm.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    out = tmp_path / "mdm.mobileconfig"
    _profile(rsa_ca, out, "--sign-cert", str(cert_file), "--sign-key", str(key_file))
    document = _verify(out, cert_file, tmp_path)
    assert document["PayloadContent"][1]["PayloadType"] == "com.apple.security.scep"
    assert len(document["PayloadContent"]) == 2  # no --exchange-host, no Exchange payload
    # our root does not verify a profile the admin's certificate signed
    result = subprocess.run(
        [require_tool("openssl"), "smime", "-verify", "-inform", "DER", "-in", str(out),
         "-CAfile", str(rsa_ca.home / "certs" / "root.crt"), "-out", "/dev/null"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode != 0
