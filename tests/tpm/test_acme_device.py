"""ACME device-attest-01, ``tpm`` format, end to end through our own client and CLI: an AK
made in swtpm and certified by our attestation CA (``tpm ak create``, ``tpm ak enroll``),
then ``cert request --acme ... --key-store tpm --attest-key --attest-chain``: the key made
in the TPM, an order for the device's permanent-identifier, the attestation object built
by :mod:`ostiary.client.acme_attest`, the certificate with the hardware policy OID, and
our gateway's route that demands that OID admitting openssl with the key in the TPM.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ostiary.authority.attestation_ca import EK_ROOTS_FILE
from ostiary.client.tpm import load_tpm_key_pem
from ostiary.client.tpm_ak import read_endorsement_key
from ostiary.core.lifetime import Lifetime
from ostiary.core.names import PERMANENT_IDENTIFIER_OID, decode_other_name
from ostiary.gateway.config import Route
from ostiary.provisioners import ProvisionerClaims
from ostiary.provisioners.acme import AcmeProvisioner, add_acme_provisioner
from tests.client.conftest import ok
from tests.gateway.conftest import (  # noqa: F401 - fixtures re-exported
    CA,
    EchoUpstream,
    ca,
    ca_material,
    gateway_config,
    provisioners,
    run_gateway,
    upstream,
)
from tests.tpm.conftest import HARDWARE_POLICY, PIN, BrokeredTPM, Manufacturer
from tests.tpm.test_attest import _openssl_get

pytestmark = pytest.mark.slow

PROVISIONER = "devices"


@pytest.fixture(scope="module")
def devices(ca: CA, manufacturer: Manufacturer) -> str:  # noqa: F811
    """An ``acme`` provisioner taking device-attest-01 (tpm) with our own CA as the
    attestation root; the directory URL.
    """
    (ca.authority.ca.paths.root / EK_ROOTS_FILE).write_bytes(manufacturer.roots_pem())
    root = ca.authority.ca.root.public_bytes(serialization.Encoding.PEM).decode()
    add_acme_provisioner(
        ca.authority.store,
        AcmeProvisioner(
            name=PROVISIONER,
            claims=ProvisionerClaims(lifetime=Lifetime()),
            challenges=("device-attest-01",),
            profiles=("device",),
            default_profile="device",
            attestation_roots=root,
            attestation_formats=("tpm",),
            policy_oid=HARDWARE_POLICY,
        ),
        now=datetime.now(UTC),
    )
    return f"{ca.running.server.https_url}/acme/{PROVISIONER}/directory"


def test_tpm_device_gets_an_attested_certificate_over_acme_and_opens_the_hardware_route(
    ca: CA,  # noqa: F811
    devices: str,
    brokered_tpm: BrokeredTPM,
    upstream: EchoUpstream,  # noqa: F811
    tmp_path: Path,
) -> None:
    tcti = brokered_tpm.tcti
    ak_file, ak_chain = tmp_path / "ak.pem", tmp_path / "ak-chain.pem"
    ok("tpm", "ak", "create", "--out", ak_file, "--tcti", tcti)
    ok("tpm", "ak", "enroll", "--ak", ak_file, "--out", ak_chain, "--tcti", tcti,
       "--ca-url", ca.running.server.https_url, "--root", ca.root_file)  # fmt: skip
    ek = read_endorsement_key(tcti).certificate.public_key()
    device = hashlib.sha256(
        ek.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ).hexdigest()

    pin_file, crt, key_file = tmp_path / "pin", tmp_path / "device.crt", tmp_path / "device.key"
    pin_file.write_bytes(PIN + b"\n")
    ok("cert", "request", crt, key_file, "--acme", devices, "--root", ca.root_file,
       "--key-store", "tpm", "--tcti", tcti, "--pin-file", pin_file,
       "--attest-key", ak_file, "--attest-chain", ak_chain)  # fmt: skip

    leaf = x509.load_pem_x509_certificates(crt.read_bytes())[0]
    policies = leaf.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert HARDWARE_POLICY in {p.policy_identifier.dotted_string for p in policies}
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    (named,) = sans.get_values_for_type(x509.OtherName)
    assert named.type_id == PERMANENT_IDENTIFIER_OID
    assert decode_other_name(named) == device
    usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [x509.ExtendedKeyUsageOID.CLIENT_AUTH]
    tpm_key = load_tpm_key_pem(key_file.read_bytes(), tcti=tcti, pin=PIN)
    assert leaf.public_key() == tpm_key.public_key()

    routes = (Route(prefix="/vault", policy_oids=(HARDWARE_POLICY,)),)
    config = gateway_config(ca, f"http://127.0.0.1:{upstream.port}", routes=routes)
    with run_gateway(config) as gateway:
        answer = _openssl_get(brokered_tpm, gateway.port, crt, key_file, ca.ca_file, "/vault/x")
        assert "HTTP/1.1 200" in answer, answer
        software = ca.issue("laptop-soft", ("dns:laptop-soft.corp.example",))
        with ca.client(software, gateway.port) as client:
            assert client.get("/vault/x").status_code == 403
