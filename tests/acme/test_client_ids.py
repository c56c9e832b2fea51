"""One-time ClientIdentifiers for Apple's ACME payload (``ostiary ca acme client-id``).

A real ``ostiary ca serve`` with an ``acme`` provisioner offering device-attest-01 (apple
format) whose attestation roots are the synthetic Apple chain of
``tests/acme_validation/test_device_attest_apple.py`` (no Apple device is here). The device
orders the ClientIdentifier as its permanent identifier; the certificate carries the names
the identifier was bound to, and the identifier works for one order only.
"""

from __future__ import annotations

import plistlib
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from ostiary.authority.folder import CAMaterial
from ostiary.client.acme_attest import encode_attestation_object
from ostiary.provisioners.acme import AcmeProvisioner, add_acme_provisioner
from ostiary.store import Store, sqlite_url_for
from tests.acme.conftest import CLAIMS, HARDWARE_POLICY, AcmeServer, RawClient, b64url
from tests.acme.test_rejections import poll
from tests.acme_validation.test_device_attest_apple import AppleDevice, _ca
from tests.conftest import require_tool
from tests.server.conftest import Provisioners
from tests.server.processes import make_ca_folder, start_serve

PHONES = "phones"


@pytest.fixture(scope="module")
def device() -> AppleDevice:
    root, root_key = _ca("Synthetic Enterprise Attestation Root", None)
    return AppleDevice(root, _ca("Synthetic Attestation Sub CA", (root, root_key)))


@pytest.fixture(scope="module")
def phones_server(
    ca_material: CAMaterial,
    provisioners: Provisioners,
    device: AppleDevice,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AcmeServer]:
    folder_path = tmp_path_factory.mktemp("acme-phones")
    url = sqlite_url_for(folder_path / "ca.db")
    folder = make_ca_folder(ca_material, provisioners, url, folder_path / "ca")
    store = Store.from_url(url)
    try:
        add_acme_provisioner(
            store,
            AcmeProvisioner(
                name=PHONES,
                claims=CLAIMS,
                challenges=("device-attest-01",),
                profiles=("client",),
                default_profile="client",
                attestation_roots=device.root.public_bytes(serialization.Encoding.PEM).decode(),
                attestation_formats=("apple",),
                policy_oid=HARDWARE_POLICY,
            ),
            now=datetime.now(UTC),
        )
    finally:
        store.dispose()
    root_file = folder_path / "root.pem"
    root_file.write_bytes(folder.root.public_bytes(serialization.Encoding.PEM))
    server = start_serve(folder, folder_path / "serve.log")
    try:
        yield AcmeServer(server, folder, root_file, 0)
    finally:
        server.stop()


def _client_id(server: AcmeServer, *args: str) -> subprocess.CompletedProcess[str]:
    """``ostiary ca acme client-id ARGS`` on the server's CA folder (no password needed)."""
    return subprocess.run(
        [sys.executable, "-c", "from ostiary.cli.main import main; main()", "ca", "acme",
         "client-id", "--dir", str(server.folder.paths.root), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _attest(raw: RawClient, device: AppleDevice, identifier: str) -> tuple[dict[str, object], Any]:
    made = raw.post(
        raw.directory["newOrder"],
        {"identifiers": [{"type": "permanent-identifier", "value": identifier}]},
    )
    assert made.status_code == 201, made.text
    authz = raw.post(made.json()["authorizations"][0], None).json()
    challenge = authz["challenges"][0]
    assert challenge["type"] == "device-attest-01"
    x5c, key = device.attest(challenge["token"])
    answer = raw.post(
        challenge["url"], {"attObj": encode_attestation_object("apple", {"x5c": x5c})}
    )
    assert answer.status_code == 200, answer.text
    order = poll(raw, made.headers["Location"], until=("ready", "invalid"))
    return order, key


def _csr(key: Any) -> str:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "alice-iphone")]))
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name("alice@corp.example")]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return b64url(csr.public_bytes(serialization.Encoding.DER))


def test_client_id_stands_in_for_the_serial_once_and_the_certificate_gets_its_names(
    phones_server: AcmeServer, device: AppleDevice
) -> None:
    made = _client_id(phones_server, "--provisioner", PHONES, "--subject", "alice-iphone",
                      "--san", "email:alice@corp.example", "--ttl", "1h")  # fmt: skip
    assert made.returncode == 0, made.stderr
    client_id = made.stdout.strip()
    assert len(client_id) == 40 and client_id not in made.stderr  # printed once, on stdout

    raw = RawClient(phones_server, PHONES)
    raw.register()
    try:
        order, key = _attest(raw, device, client_id)
        assert order["status"] == "ready", order
        done = raw.post(str(order["finalize"]), {"csr": _csr(key)})
        assert done.status_code == 200, done.text
        chain = raw.post(done.json()["certificate"], None)
        leaf = x509.load_pem_x509_certificates(chain.content)[0]

        # the same identifier again: spent, so it must be the device's serial or UDID
        before = phones_server.certificate_count()
        again, _ = _attest(raw, device, client_id)
        assert again["status"] == "invalid", again
        authz = raw.post(str(again["authorizations"][0]), None).json()  # type: ignore[index]
        assert "neither the serial number nor the UDID" in authz["challenges"][0]["error"]["detail"]
        assert phones_server.certificate_count() == before
    finally:
        raw.close()
    # the names bound to the ClientIdentifier, not the identifier itself
    assert leaf.subject.rfc4514_string() == "CN=alice-iphone"
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(sans) == [x509.RFC822Name("alice@corp.example")]
    assert leaf.public_key() == key.public_key()
    policies = leaf.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert HARDWARE_POLICY in {p.policy_identifier.dotted_string for p in policies}


def test_client_id_for_a_provisioner_without_device_attest_is_refused(
    phones_server: AcmeServer, tmp_path: Path
) -> None:
    refused = _client_id(phones_server, "--provisioner", "nope", "--subject", "x")
    assert refused.returncode != 0
    assert refused.stderr.strip().count("\n") == 0 and "nope" in refused.stderr
    too_long = _client_id(phones_server, "--provisioner", PHONES, "--subject", "x", "--ttl", "90d")
    assert too_long.returncode != 0 and "30d" in too_long.stderr


def test_acme_profile_enrolls_an_attested_key_with_its_client_identifier(
    phones_server: AcmeServer, device: AppleDevice, tmp_path: Path
) -> None:
    """``enroll-profile apple --acme``: every field of the ACME payload, then its
    ClientIdentifier used as the phone would (through the synthetic attestation).
    """
    out = tmp_path / "alice.mobileconfig"
    made = subprocess.run(
        [sys.executable, "-c", "from ostiary.cli.main import main; main()", "ca",
         "enroll-profile", "apple", "--provisioner", PHONES, "--acme", "--out", str(out),
         "--subject", "alice-iphone", "--san", "email:alice@corp.example",
         "--ca-url", phones_server.process.https_url,
         "--dir", str(phones_server.folder.paths.root),
         "--password-file", str(phones_server.folder.password_file)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    plist = tmp_path / "alice.plist"
    verified = subprocess.run(
        [require_tool("openssl"), "smime", "-verify", "-inform", "DER", "-in", str(out),
         "-CAfile", str(phones_server.root_file), "-out", str(plist)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    root_payload, acme = plistlib.loads(plist.read_bytes())["PayloadContent"]
    assert root_payload["PayloadType"] == "com.apple.security.root"
    assert acme["PayloadType"] == "com.apple.security.acme"
    assert acme["DirectoryURL"] == phones_server.directory(PHONES)
    assert acme["KeyType"] == "ECSECPrimeRandom" and acme["KeySize"] == 384
    assert acme["HardwareBound"] is True and acme["Attest"] is True
    assert acme["Subject"] == [[["CN", "alice-iphone"]]]
    assert acme["SubjectAltName"] == {"rfc822Name": "alice@corp.example"}
    assert acme["ExtendedKeyUsage"] == ["1.3.6.1.5.5.7.3.2"] and acme["UsageFlags"] == 1
    assert acme["PayloadVersion"] == 1 and acme["PayloadUUID"]

    raw = RawClient(phones_server, PHONES)
    raw.register()
    try:
        order, key = _attest(raw, device, acme["ClientIdentifier"])
        assert order["status"] == "ready", order
        done = raw.post(str(order["finalize"]), {"csr": _csr(key)})
        assert done.status_code == 200, done.text
    finally:
        raw.close()
