"""Our open TPM attestation CA: swtpm's EK certificate -> MakeCredential -> ActivateCredential
-> AK certificate, over the real server; and its rejected twins."""

from __future__ import annotations

import base64
import hashlib
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ostiary.authority.attestation_ca import EK_ROOTS_FILE
from ostiary.client.api import OstiaryClient
from ostiary.client.enrollment import build_csr
from ostiary.client.tpm import create_attestation_key, create_tpm_key, load_tpm_key_pem
from ostiary.client.tpm_ak import activate_credential, read_endorsement_key
from ostiary.core.lifetime import Lifetime
from ostiary.core.names import parse_subject
from ostiary.provisioners.attest import AttestProvisioner, add_attest_provisioner
from ostiary.provisioners.base import ProvisionerClaims
from tests.client.conftest import ok, refused
from tests.gateway.conftest import CA, ca, ca_material, provisioners  # noqa: F401
from tests.tpm.conftest import (
    HARDWARE_POLICY,
    PIN,
    Manufacturer,
    SoftwareTPM,
    make_attestation_ca,
)

AIK = x509.ObjectIdentifier("2.23.133.8.3")
EK_ATTEST = "tpm-ek"


@pytest.fixture(scope="module")
def ak_ca(ca: CA, manufacturer: Manufacturer) -> CA:  # noqa: F811
    """Our CA trusting swtpm's manufacturer for EKs, and an attest provisioner trusting the
    AK certificates it issues itself."""
    (ca.authority.ca.paths.root / EK_ROOTS_FILE).write_bytes(manufacturer.roots_pem())
    root = ca.authority.ca.root.public_bytes(serialization.Encoding.PEM).decode()
    add_attest_provisioner(
        ca.authority.store,
        AttestProvisioner(
            name=EK_ATTEST,
            roots_pem=root,
            policy_oid=HARDWARE_POLICY,
            claims=ProvisionerClaims(lifetime=Lifetime()),
        ),
        now=datetime.now(UTC),
    )
    return ca


@pytest.fixture
def http(ak_ca: CA) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=ak_ca.running.server.https_url,
        verify=ssl.create_default_context(cafile=str(ak_ca.root_file)),
        timeout=30,
    ) as client:
        yield client


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _enrollment(swtpm: SoftwareTPM, ak_public: bytes) -> dict[str, Any]:
    ek = read_endorsement_key(swtpm.tcti)
    return {
        "ek_chain": [_b64(ek.certificate.public_bytes(serialization.Encoding.DER))],
        "ek_public": _b64(ek.public_area),
        "ak_public": _b64(ak_public),
    }


def _challenge(http: httpx.Client, enrollment: dict[str, Any]) -> dict[str, Any]:
    response = http.post("/attestation/ak", json=enrollment)
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _open(swtpm: SoftwareTPM, ak: Any, challenge: dict[str, Any]) -> str:
    ek = read_endorsement_key(swtpm.tcti)
    secret = activate_credential(
        ak,
        ek,
        base64.b64decode(challenge["credential_blob"]),
        base64.b64decode(challenge["encrypted_secret"]),
    )
    return _b64(secret)


def _problem(response: httpx.Response, status: int, text: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert text in response.json()["detail"]


def test_ak_enroll_proves_the_ek_and_gets_an_ak_certificate_then_an_attested_key(
    ak_ca: CA, swtpm: SoftwareTPM, tmp_path: Path
) -> None:
    ak_file, chain_file = tmp_path / "ak.pem", tmp_path / "ak-chain.pem"
    ok("tpm", "ak", "create", "--out", ak_file, "--tcti", swtpm.tcti)
    where = ["--ca-url", ak_ca.running.server.https_url, "--root", ak_ca.root_file]
    ok("tpm", "ak", "enroll", "--ak", ak_file, "--out", chain_file, "--tcti", swtpm.tcti, *where)
    assert swtpm.transient_count() == 0

    chain = x509.load_pem_x509_certificates(chain_file.read_bytes())
    ak_certificate = chain[0]
    ek = read_endorsement_key(swtpm.tcti)
    ek_hash = hashlib.sha256(
        ek.certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).hexdigest()
    usages = ak_certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [AIK]
    san = ak_certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"urn:ek:sha256:{ek_hash}"]
    (tpm,) = san.get_values_for_type(x509.DirectoryName)
    attributes = {a.oid.dotted_string: a.value for a in tpm}
    assert attributes["2.23.133.2.2"] == "swtpm"  # model, from the EK certificate
    assert "2.23.133.2.1" in attributes  # manufacturer
    assert ak_certificate.subject.rfc4514_string() == f"CN={ek_hash}"

    # The AK now vouches for a PIN-protected key: a certificate with the policy OID.
    from ostiary.client.tpm import AttestationKey, certify_key

    ak = AttestationKey(load_tpm_key_pem(ak_file.read_bytes(), tcti=swtpm.tcti, pin=None),
                        tuple(chain))  # fmt: skip
    key = create_tpm_key(tcti=swtpm.tcti, pin=PIN)
    with OstiaryClient(ak_ca.running.server.https_url, [ak_ca.authority.ca.root]) as client:
        statement = certify_key(key, ak, client.attestation_nonce()).to_json()
        csr = build_csr(ak_certificate.subject, [], key)
        issued = client.sign_with_attestation(csr, EK_ATTEST, statement)
    policies = issued.certificate.extensions.get_extension_for_class(x509.CertificatePolicies)
    assert HARDWARE_POLICY in {p.policy_identifier.dotted_string for p in policies.value}
    names = issued.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert names.value.get_values_for_type(x509.DirectoryName) == []
    assert swtpm.transient_count() == 0


def test_ek_certificate_of_an_unknown_manufacturer_is_refused(
    ak_ca: CA, http: httpx.Client, swtpm: SoftwareTPM
) -> None:
    roots = ak_ca.authority.ca.paths.root / EK_ROOTS_FILE
    trusted = roots.read_bytes()
    roots.write_bytes(make_attestation_ca("Some Other TPM Maker").pem())
    try:
        ak = create_attestation_key(tcti=swtpm.tcti).key
        response = http.post("/attestation/ak", json=_enrollment(swtpm, ak.public_area))
    finally:
        roots.write_bytes(trusted)
    _problem(response, 401, "does not chain to a TPM manufacturer root")


def test_wrong_activate_credential_answer_is_refused(
    ak_ca: CA, http: httpx.Client, swtpm: SoftwareTPM
) -> None:
    ak = create_attestation_key(tcti=swtpm.tcti).key
    enrollment = _enrollment(swtpm, ak.public_area)
    _challenge(http, enrollment)
    wrong = {**enrollment, "secret": _b64(b"\x00" * 32)}
    _problem(http.post("/attestation/ak/certificate", json=wrong), 401, "not the secret")


def test_answer_for_another_ak_is_refused(
    ak_ca: CA, http: httpx.Client, swtpm: SoftwareTPM
) -> None:
    ak = create_attestation_key(tcti=swtpm.tcti).key
    enrollment = _enrollment(swtpm, ak.public_area)
    secret = _open(swtpm, ak, _challenge(http, enrollment))
    other = create_attestation_key(tcti=swtpm.tcti).key
    swapped = {**enrollment, "ak_public": _b64(other.public_area), "secret": secret}
    _problem(http.post("/attestation/ak/certificate", json=swapped), 401, "not the secret")


def test_ak_that_is_not_restricted_is_refused(
    ak_ca: CA, http: httpx.Client, swtpm: SoftwareTPM
) -> None:
    key = create_tpm_key(tcti=swtpm.tcti, pin=PIN)  # an ordinary signing key
    response = http.post("/attestation/ak", json=_enrollment(swtpm, key.public_area))
    _problem(response, 403, "not a restricted signing key")


def test_ak_with_an_unknown_name_algorithm_is_a_bad_request(
    ak_ca: CA, http: httpx.Client, swtpm: SoftwareTPM
) -> None:
    """Was a 500: ``get_name()`` of tpm2-pytss raised ValueError on a nameAlg it does not know
    (the fault the ``tpm`` harness found in tpm_statement, here on AK activation)."""
    ak = create_attestation_key(tcti=swtpm.tcti).key
    public = bytearray(ak.public_area)
    public[2:4] = b"\x00\x99"  # TPMT_PUBLIC: type (2 bytes), then nameAlg
    enrollment = _enrollment(swtpm, bytes(public))
    _problem(http.post("/attestation/ak", json=enrollment), 400, "name algorithm we do not know")
    answer = {**enrollment, "secret": _b64(b"\x00" * 32)}
    _problem(http.post("/attestation/ak/certificate", json=answer), 400, "name algorithm")


def test_replayed_challenge_answer_is_refused(
    ak_ca: CA, http: httpx.Client, swtpm: SoftwareTPM
) -> None:
    ak = create_attestation_key(tcti=swtpm.tcti).key
    enrollment = _enrollment(swtpm, ak.public_area)
    answer = {**enrollment, "secret": _open(swtpm, ak, _challenge(http, enrollment))}
    assert http.post("/attestation/ak/certificate", json=answer).status_code == 201
    _problem(http.post("/attestation/ak/certificate", json=answer), 409, "already used")
    assert swtpm.transient_count() == 0


def test_client_certificate_of_our_ca_is_no_ak_certificate(ak_ca: CA, swtpm: SoftwareTPM) -> None:
    """A certificate of our CA without tcg-kp-AIKCertificate cannot vouch for keys, though
    it chains to the attest provisioner's root (a non-restricted key could sign forgeries)."""
    from ostiary.client.tpm import AttestationKey, certify_key
    from ostiary.core.errors import Unauthorized
    from ostiary.core.issuance import Authorization

    ak = create_attestation_key(tcti=swtpm.tcti).key
    subject = parse_subject("not-an-ak")
    authorization = Authorization(subject=subject, names=())
    plain = ak_ca.authority.issue_for_key(
        ak.public_key(), authorization, actor="test", event="certificate.issued"
    )
    chain = (plain, ak_ca.authority.issuer.certificate)
    key = create_tpm_key(tcti=swtpm.tcti, pin=PIN)
    with OstiaryClient(ak_ca.running.server.https_url, [ak_ca.authority.ca.root]) as client:
        statement = certify_key(key, AttestationKey(ak, chain), client.attestation_nonce())
        csr = build_csr(subject, [], key)
        with pytest.raises(Unauthorized, match="not an AK certificate"):
            client.sign_with_attestation(csr, EK_ATTEST, statement.to_json())


def test_ca_without_ek_roots_says_so(ak_ca: CA, http: httpx.Client, swtpm: SoftwareTPM) -> None:
    roots = ak_ca.authority.ca.paths.root / EK_ROOTS_FILE
    trusted = roots.read_bytes()
    roots.unlink()
    try:
        ak = create_attestation_key(tcti=swtpm.tcti).key
        response = http.post("/attestation/ak", json=_enrollment(swtpm, ak.public_area))
    finally:
        roots.write_bytes(trusted)
    _problem(response, 404, "no TPM EK roots")
    where = ["--ca-url", ak_ca.running.server.https_url, "--root", ak_ca.root_file]
    missing = ["--ak", "/nonexistent.pem", "--out", "/tmp/x.pem"]
    result = refused("tpm", "ak", "enroll", *missing, *where)
    assert "attestation key /nonexistent.pem does not exist" in result.stderr


def test_csr_naming_another_device_than_the_ak_certificate_says_which_name_is_wanted(
    ak_ca: CA, swtpm: SoftwareTPM, tmp_path: Path
) -> None:
    from ostiary.client.tpm import AttestationKey, certify_key
    from ostiary.client.tpm_ak import enroll_attestation_key
    from ostiary.core.errors import PolicyDenied

    ak = create_attestation_key(tcti=swtpm.tcti).key
    key = create_tpm_key(tcti=swtpm.tcti, pin=PIN)
    with OstiaryClient(ak_ca.running.server.https_url, [ak_ca.authority.ca.root]) as client:
        issued = enroll_attestation_key(client, ak, tcti=swtpm.tcti)
        chain = AttestationKey(ak, (issued.certificate, *issued.chain))
        statement = certify_key(key, chain, client.attestation_nonce()).to_json()
        csr = build_csr(parse_subject("laptop-9"), [], key)
        with pytest.raises(PolicyDenied, match="must be the attestation key certificate's") as e:
            client.sign_with_attestation(csr, EK_ATTEST, statement)
    assert issued.certificate.subject.rfc4514_string() in str(e.value)
