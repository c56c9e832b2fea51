"""ACME device-attest-01, ``tpm`` format, end to end as a device does it: an AK in swtpm
certified by our own attestation CA (``ostiary tpm ak enroll`` against a running
``ca serve``), a fresh TPM key certified by that AK over SHA-256(key authorization)
(:mod:`ostiary.client.acme_attest`), and the validator's verdict. Then its rejected twins.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ostiary.acme.validation.base import ChallengeContext, ChallengeFailed, ValidationSettings
from ostiary.acme.validation.device_attest import validate_device_attest01
from ostiary.authority.attestation_ca import EK_ROOTS_FILE
from ostiary.client.acme_attest import (
    encode_attestation_object,
    tpm_attestation_statement,
    tpm_challenge_payload,
)
from ostiary.client.tpm import (
    AttestationKey,
    create_attestation_key,
    create_tpm_key,
    load_tpm_key_pem,
)
from ostiary.client.tpm_ak import read_endorsement_key
from ostiary.core.names import hardware_module_name, permanent_identifier_name
from tests.client.conftest import ok
from tests.gateway.conftest import CA, ca, ca_material, provisioners  # noqa: F401
from tests.tpm.conftest import AttestationCA, Manufacturer, SoftwareTPM, make_attestation_ca

SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


@dataclass
class EnrolledAK:
    """An AK whose certificate our attestation CA issued; the device it names."""

    ak_file: Path
    chain: tuple[x509.Certificate, ...]
    device: str
    roots: list[x509.Certificate]

    def load(self, swtpm: SoftwareTPM) -> AttestationKey:
        key = load_tpm_key_pem(self.ak_file.read_bytes(), tcti=swtpm.tcti, pin=None)
        return AttestationKey(key, self.chain)


@pytest.fixture(scope="module")
def enrolled(
    ca: CA,  # noqa: F811
    manufacturer: Manufacturer,
    swtpm_server: SoftwareTPM,
    tmp_path_factory: pytest.TempPathFactory,
) -> EnrolledAK:
    (ca.authority.ca.paths.root / EK_ROOTS_FILE).write_bytes(manufacturer.roots_pem())
    folder = tmp_path_factory.mktemp("device-attest")
    ak_file, chain_file = folder / "ak.pem", folder / "ak-chain.pem"
    tcti = swtpm_server.tcti
    ok("tpm", "ak", "create", "--out", ak_file, "--tcti", tcti)
    ok("tpm", "ak", "enroll", "--ak", ak_file, "--out", chain_file, "--tcti", tcti,
       "--ca-url", ca.running.server.https_url, "--root", ca.root_file)  # fmt: skip
    ek = read_endorsement_key(tcti)
    device = hashlib.sha256(ek.certificate.public_key().public_bytes(
        serialization.Encoding.DER, SPKI)).hexdigest()  # fmt: skip
    chain = tuple(x509.load_pem_x509_certificates(chain_file.read_bytes()))
    return EnrolledAK(ak_file, chain, device, [ca.authority.ca.root])


def _context(
    identifier: str, payload: dict[str, Any], key_authorization: str, **policy: Any
) -> ChallengeContext:
    return ChallengeContext(
        challenge_type="device-attest-01",
        identifier_type="permanent-identifier",
        identifier_value=identifier,
        token=key_authorization.split(".")[0],
        key_authorization=key_authorization,
        payload=payload,
        policy=policy,
    )


def _key_authorization() -> str:
    return f"{secrets.token_urlsafe(32)}.{secrets.token_urlsafe(32)}"


def _fails(context: ChallengeContext) -> ChallengeFailed:
    with pytest.raises(ChallengeFailed) as failed:
        asyncio.run(validate_device_attest01(context, ValidationSettings()))
    assert failed.value.problem == "badAttestationStatement"
    assert "\n" not in failed.value.detail
    return failed.value


def test_tpm_key_certified_over_the_key_authorization_validates(
    enrolled: EnrolledAK, swtpm: SoftwareTPM
) -> None:
    key = create_tpm_key(tcti=swtpm.tcti)
    keyauth = _key_authorization()
    payload = tpm_challenge_payload(key, enrolled.load(swtpm), keyauth)
    context = _context(
        enrolled.device, payload, keyauth, attestation_roots=enrolled.roots,
        attestation_formats=["tpm"],
    )  # fmt: skip
    result = asyncio.run(validate_device_attest01(context, ValidationSettings()))
    assert result.hardware_key is True
    assert result.attested_spki_der == key.public_key().public_bytes(
        serialization.Encoding.DER, SPKI
    )
    assert swtpm.transient_count() == 0


def test_statement_over_another_key_authorization_is_refused(
    enrolled: EnrolledAK, swtpm: SoftwareTPM
) -> None:
    key = create_tpm_key(tcti=swtpm.tcti)
    payload = tpm_challenge_payload(key, enrolled.load(swtpm), _key_authorization())
    context = _context(
        enrolled.device, payload, _key_authorization(), attestation_roots=enrolled.roots
    )
    assert "made over another nonce" in _fails(context).detail


def test_ak_not_chaining_to_the_roots_is_refused(enrolled: EnrolledAK, swtpm: SoftwareTPM) -> None:
    key = create_tpm_key(tcti=swtpm.tcti)
    keyauth = _key_authorization()
    payload = tpm_challenge_payload(key, enrolled.load(swtpm), keyauth)
    other = make_attestation_ca("Another Attestation CA").certificate
    context = _context(enrolled.device, payload, keyauth, attestation_roots=[other])
    assert "does not chain to an attestation root" in _fails(context).detail


def test_identifier_not_in_the_ak_certificate_is_refused(
    enrolled: EnrolledAK, swtpm: SoftwareTPM
) -> None:
    key = create_tpm_key(tcti=swtpm.tcti)
    keyauth = _key_authorization()
    payload = tpm_challenge_payload(key, enrolled.load(swtpm), keyauth)
    context = _context("0" * 64, payload, keyauth, attestation_roots=enrolled.roots)
    assert "is not the device the AK certificate names" in _fails(context).detail


def test_ak_certificate_naming_no_device_is_refused_not_skipped(
    swtpm: SoftwareTPM, attestation_ca: AttestationCA
) -> None:
    ak = create_attestation_key(tcti=swtpm.tcti)
    certificate = attestation_ca.certify_ak(ak.key, "laptop-7.corp.example")  # a DNS SAN only
    key = create_tpm_key(tcti=swtpm.tcti)
    keyauth = _key_authorization()
    payload = tpm_challenge_payload(key, AttestationKey(ak.key, (certificate,)), keyauth)
    context = _context(
        "laptop-7.corp.example", payload, keyauth, attestation_roots=[attestation_ca.certificate]
    )
    assert "names no device (no permanentIdentifier)" in _fails(context).detail


def test_ak_certificate_not_naming_its_tpm_is_refused(
    swtpm: SoftwareTPM, attestation_ca: AttestationCA
) -> None:
    ak = create_attestation_key(tcti=swtpm.tcti)
    device = "a" * 64
    certificate = attestation_ca.certify_ak(
        ak.key, "laptop-8.corp.example", names=(permanent_identifier_name(device),),
        tpm_name=False,
    )  # fmt: skip
    key = create_tpm_key(tcti=swtpm.tcti)
    keyauth = _key_authorization()
    payload = tpm_challenge_payload(key, AttestationKey(ak.key, (certificate,)), keyauth)
    context = _context(device, payload, keyauth, attestation_roots=[attestation_ca.certificate])
    assert "does not name its TPM" in _fails(context).detail


def test_hardware_module_is_proved_by_the_ak_certificates_hardware_module_name(
    swtpm: SoftwareTPM, attestation_ca: AttestationCA
) -> None:
    """A ``hardware-module`` identifier is the ``hwSerialNum`` of an RFC 4108
    hardwareModuleName in the AK certificate: that one validates, another is refused, and
    an AK certificate with none proves no module.
    """
    ak = create_attestation_key(tcti=swtpm.tcti)
    module = hardware_module_name("1.3.6.1.4.1.55555.9", b"SN-0042")
    named = attestation_ca.certify_ak(ak.key, "laptop-9.corp.example", names=(module,))
    bare = attestation_ca.certify_ak(ak.key, "laptop-9.corp.example")
    roots = [attestation_ca.certificate]
    results: dict[tuple[str, bool], str] = {}
    for serial, certificate in (("SN-0042", named), ("SN-0043", named), ("SN-0042", bare)):
        key = create_tpm_key(tcti=swtpm.tcti)
        keyauth = _key_authorization()
        payload = tpm_challenge_payload(key, AttestationKey(ak.key, (certificate,)), keyauth)
        context = ChallengeContext(
            challenge_type="device-attest-01", identifier_type="hardware-module",
            identifier_value=serial, token=keyauth.split(".")[0], key_authorization=keyauth,
            payload=payload, policy={"attestation_roots": roots},
        )  # fmt: skip
        try:
            asyncio.run(validate_device_attest01(context, ValidationSettings()))
            results[serial, certificate is named] = "valid"
        except ChallengeFailed as failed:
            results[serial, certificate is named] = failed.detail
    assert results[("SN-0042", True)] == "valid"
    assert "is not one the AK certificate names" in results[("SN-0043", True)]
    assert "is not one the AK certificate names" in results[("SN-0042", False)]


def test_restricted_key_is_refused(enrolled: EnrolledAK, swtpm: SoftwareTPM) -> None:
    ak = enrolled.load(swtpm)
    keyauth = _key_authorization()
    payload = tpm_challenge_payload(ak.key, ak, keyauth)  # the AK certifies itself
    context = _context(enrolled.device, payload, keyauth, attestation_roots=enrolled.roots)
    assert "restricted" in _fails(context).detail


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        pytest.param({"fmt": "tpm", "formats": ["apple"]}, "is not accepted here",
                     id="fail/tpm-disabled"),
        pytest.param({"fmt": "android-key"}, "is not accepted here", id="fail/unknown-format"),
        pytest.param({"ver": "1.2"}, "'ver' is not \"2.0\"", id="fail/version"),
        pytest.param({"alg": -257}, "does not match the AK's key", id="fail/alg-mismatch"),
        pytest.param({"alg": -8}, "neither ES256", id="fail/alg-unknown"),
        pytest.param({"sig": b"\x00\x18"}, "not a valid TPMT_SIGNATURE", id="fail/signature"),
        pytest.param({"roots": []}, "no attestation roots", id="fail/no-roots"),
    ],
)  # fmt: skip
def test_malformed_tpm_statement_is_refused(
    enrolled: EnrolledAK, swtpm: SoftwareTPM, change: dict[str, Any], detail: str
) -> None:
    key = create_tpm_key(tcti=swtpm.tcti)
    keyauth = _key_authorization()
    statement = tpm_attestation_statement(key, enrolled.load(swtpm), keyauth)
    statement.update({k: v for k, v in change.items() if k in ("ver", "alg", "sig")})
    payload = {"attObj": encode_attestation_object(change.get("fmt", "tpm"), statement)}
    policy: dict[str, Any] = {"attestation_roots": change.get("roots", enrolled.roots)}
    if "formats" in change:
        policy["attestation_formats"] = change["formats"]
    assert detail in _fails(_context(enrolled.device, payload, keyauth, **policy)).detail


def test_dns_identifier_cannot_use_device_attest01(enrolled: EnrolledAK) -> None:
    context = ChallengeContext(
        challenge_type="device-attest-01",
        identifier_type="dns",
        identifier_value="host.example",
        token="t",
        key_authorization="t.x",
    )
    with pytest.raises(ChallengeFailed) as failed:
        asyncio.run(validate_device_attest01(context, ValidationSettings()))
    assert failed.value.problem == "rejectedIdentifier"
