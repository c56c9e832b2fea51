"""TPM keys and attestation end to end: swtpm, our CA server, the ``attest`` provisioner,
OIDC + attestation, our gateway, and openssl's tpm2 provider using the key in place."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from ostiary.client.api import OstiaryClient
from ostiary.client.enrollment import build_csr
from ostiary.client.tpm import (
    AttestationKey,
    TpmPrivateKey,
    _create_key,
    certify_key,
    create_attestation_key,
    create_tpm_key,
    load_tpm_key_pem,
    loaded_keys,
    open_tpm,
)
from ostiary.core.errors import BadRequest, Conflict, PolicyDenied, Unauthorized, WrongPassword
from ostiary.core.lifetime import Lifetime
from ostiary.core.names import parse_subject
from ostiary.gateway.config import Route
from ostiary.provisioners import authorize_sign
from ostiary.provisioners.approval import add_approval_provisioner
from ostiary.provisioners.approval_decisions import approve_request, reject_request
from ostiary.provisioners.attest import (
    AttestProvisioner,
    add_attest_provisioner,
    require_attestation,
)
from ostiary.provisioners.base import CAIdentity, ProvisionerClaims
from ostiary.provisioners.oidc import OIDCProvisioner, add_oidc_provisioner
from ostiary.provisioners.oidc_binding import nonce_for_key
from ostiary.store import AuditEntry, CertificateRecord, CertificateRequest
from tests.conftest import require_tool
from tests.gateway.conftest import (  # noqa: F401 - fixtures re-exported
    CA,
    EchoUpstream,
    ca,
    ca_material,
    free_port,
    gateway_config,
    provisioners,
    run_gateway,
    upstream,
    wait_for_port,
)
from tests.oidc.conftest import CLIENT_ID, Provider, provider  # noqa: F401
from tests.server.audit_fault import assert_audit_unavailable, audit_refused
from tests.tpm.conftest import (
    HARDWARE_POLICY,
    OPENSSL_TPM2_CONFIG,
    PIN,
    AttestationCA,
    BrokeredTPM,
    Manufacturer,
    SoftwareTPM,
    make_attestation_ca,
    pem_chain,
)

ATTEST = "tpm"
OPS = "ops"
OIDC_HW = "corp-hw"
DEVICE = "laptop-7.corp.example"


@dataclass
class HardwareCA:
    ca: CA
    provider: Provider

    def client(self) -> OstiaryClient:
        return OstiaryClient(self.ca.running.server.https_url, [self.ca.authority.ca.root])

    def certificate_count(self) -> int:
        with self.ca.authority.store.transaction(read_only=True) as session:
            return int(session.scalar(select(func.count()).select_from(CertificateRecord)) or 0)


@pytest.fixture(scope="module")
def hw_ca(
    ca: CA,  # noqa: F811
    attestation_ca: AttestationCA,
    provider: Provider,  # noqa: F811
) -> HardwareCA:
    store = ca.authority.store
    now = datetime.now(UTC)
    claims = ProvisionerClaims(lifetime=Lifetime())
    add_attest_provisioner(
        store,
        AttestProvisioner(
            name=ATTEST,
            roots_pem=attestation_ca.pem().decode(),
            policy_oid=HARDWARE_POLICY,
            claims=claims,
        ),
        now=now,
    )
    add_oidc_provisioner(
        store,
        OIDCProvisioner(
            name=OIDC_HW,
            configuration_endpoint=provider.configuration_endpoint,
            client_id=CLIENT_ID,
            claims=claims,
            domains=("corp.example",),
        ),
        now=now,
    )
    require_attestation(store, OIDC_HW, ATTEST, now=now, actor="test")
    return HardwareCA(ca, provider)


def _csr(key: Any, name: str = DEVICE) -> x509.CertificateSigningRequest:
    return build_csr(parse_subject(name), [], key)


def _attestation(client: OstiaryClient, key: TpmPrivateKey, ak: AttestationKey) -> dict[str, Any]:
    return certify_key(key, ak, client.attestation_nonce()).to_json()


def _attested(
    hw_ca: HardwareCA, swtpm: SoftwareTPM, ak: AttestationKey
) -> tuple[TpmPrivateKey, dict[str, Any]]:
    """A new PIN-protected key in the TPM and its attestation over a fresh nonce."""
    key = create_tpm_key(tcti=swtpm.tcti, pin=PIN)
    with hw_ca.client() as client:
        return key, _attestation(client, key, ak)


def _policies(certificate: x509.Certificate) -> set[str]:
    extension = certificate.extensions.get_extension_for_class(x509.CertificatePolicies)
    return {p.policy_identifier.dotted_string for p in extension.value}


# --------------------------------------------------------------------------- accepted


def test_tpm_key_with_pin_gets_a_certificate_with_the_hardware_policy(
    hw_ca: HardwareCA, swtpm: SoftwareTPM, attestation_key: AttestationKey
) -> None:
    key = create_tpm_key(tcti=swtpm.tcti, pin=PIN)
    with hw_ca.client() as client:
        issued = client.sign_with_attestation(
            _csr(key), ATTEST, _attestation(client, key, attestation_key)
        )
    certificate = issued.certificate
    assert certificate.public_key() == key.public_key()
    assert HARDWARE_POLICY in _policies(certificate)
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [DEVICE]
    assert swtpm.transient_count() == 0


def test_wrong_pin_fails_at_the_tpm(swtpm: SoftwareTPM) -> None:
    key = create_tpm_key(tcti=swtpm.tcti, pin=PIN)
    wrong = load_tpm_key_pem(key.to_pem(), tcti=swtpm.tcti, pin=b"not-the-pin")
    with pytest.raises(WrongPassword, match="the TPM refused the PIN"):
        wrong.sign(b"data", ec.ECDSA(hashes.SHA256()))
    right = load_tpm_key_pem(key.to_pem(), tcti=swtpm.tcti, pin=PIN)
    signature = right.sign(b"data", ec.ECDSA(hashes.SHA256()))
    key.public_key().verify(signature, b"data", ec.ECDSA(hashes.SHA256()))
    assert swtpm.transient_count() == 0


def test_signed_in_person_with_hardware_key_gets_both_in_one_certificate(
    hw_ca: HardwareCA, swtpm: SoftwareTPM, attestation_key: AttestationKey
) -> None:
    hw_ca.provider.set_user("dana", email="dana@corp.example", email_verified=True)
    key = create_tpm_key(tcti=swtpm.tcti, pin=PIN)
    csr = _csr(key, "dana@corp.example")
    id_token = hw_ca.provider.id_token("dana", nonce=nonce_for_key(key.public_key()))
    with hw_ca.client() as client:
        attestation = _attestation(client, key, attestation_key)
        issued = client.sign_with_id_token(csr, OIDC_HW, id_token, attestation=attestation)
    san = issued.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.RFC822Name) == ["dana@corp.example"]
    assert HARDWARE_POLICY in _policies(issued.certificate)


def test_signed_in_person_without_attestation_is_refused(
    hw_ca: HardwareCA, swtpm: SoftwareTPM
) -> None:
    hw_ca.provider.set_user("erin", email="erin@corp.example", email_verified=True)
    key = ec.generate_private_key(ec.SECP256R1())
    id_token = hw_ca.provider.id_token("erin", nonce=nonce_for_key(key.public_key()))
    before = hw_ca.certificate_count()
    with hw_ca.client() as client, pytest.raises(PolicyDenied, match="requires a TPM attestation"):
        client.sign_with_id_token(_csr(key, "erin@corp.example"), OIDC_HW, id_token)
    assert hw_ca.certificate_count() == before


# --------------------------------------------------------------------------- rejected twins


def _post(hw_ca: HardwareCA, csr: x509.CertificateSigningRequest, attestation: dict[str, Any]):  # type: ignore[no-untyped-def]
    with hw_ca.ca.running.client() as http:
        return http.post(
            f"/provisioners/{ATTEST}/attest",
            json={
                "csr": csr.public_bytes(serialization.Encoding.PEM).decode(),
                "attestation": attestation,
            },
        )


def _refused(hw_ca: HardwareCA, csr: Any, attestation: dict[str, Any], status: int, text: str):  # type: ignore[no-untyped-def]
    before = hw_ca.certificate_count()
    answer = _post(hw_ca, csr, attestation)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert text in answer.json()["detail"]
    assert hw_ca.certificate_count() == before


def test_wrong_nonce_is_refused(
    hw_ca: HardwareCA, swtpm: SoftwareTPM, attestation_key: AttestationKey
) -> None:
    key = create_tpm_key(tcti=swtpm.tcti, pin=PIN)
    with hw_ca.client() as client:
        statement = certify_key(key, attestation_key, client.attestation_nonce()).to_json()
        statement["nonce"] = client.attestation_nonce()  # a real nonce, not the certified one
    _refused(hw_ca, _csr(key), statement, 401, "another nonce")


def test_nonce_not_made_by_the_ca_is_refused(
    hw_ca: HardwareCA, swtpm: SoftwareTPM, attestation_key: AttestationKey
) -> None:
    key = create_tpm_key(tcti=swtpm.tcti, pin=PIN)
    statement = certify_key(key, attestation_key, "made-up-by-the-client-0123").to_json()
    _refused(hw_ca, _csr(key), statement, 401, "not made by this CA")


def test_replayed_attestation_is_refused(
    hw_ca: HardwareCA, swtpm: SoftwareTPM, attestation_key: AttestationKey
) -> None:
    key, statement = _attested(hw_ca, swtpm, attestation_key)
    assert _post(hw_ca, _csr(key), statement).status_code == 201
    _refused(hw_ca, _csr(key), statement, 409, "already used")
    with hw_ca.ca.authority.store.transaction(read_only=True) as session:
        events = set(session.scalars(select(AuditEntry.event)))
    assert {"attestation.verified", "attestation.replayed"} <= events


def test_key_without_fixed_tpm_is_refused(
    hw_ca: HardwareCA, swtpm: SoftwareTPM, attestation_key: AttestationKey
) -> None:
    from tpm2_pytss import TPMA_OBJECT, TPMT_PUBLIC

    attributes = (
        TPMA_OBJECT.SENSITIVEDATAORIGIN | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.SIGN_ENCRYPT
    )
    template = TPMT_PUBLIC.parse("ecc256:null:null", objectAttributes=attributes)
    key = _create_key(template, tcti=swtpm.tcti, pin=PIN)
    with hw_ca.client() as client:
        statement = _attestation(client, key, attestation_key)
    _refused(hw_ca, _csr(key), statement, 403, "lacks fixedTPM, fixedParent")


def test_attestation_key_that_does_not_chain_is_refused(
    hw_ca: HardwareCA, swtpm: SoftwareTPM, attestation_key: AttestationKey
) -> None:
    stranger = make_attestation_ca("Someone Else's Attestation CA")
    foreign_ak = AttestationKey(
        attestation_key.key, (stranger.certify_ak(attestation_key.key, DEVICE),)
    )
    key = create_tpm_key(tcti=swtpm.tcti, pin=PIN)
    with hw_ca.client() as client:
        statement = _attestation(client, key, foreign_ak)
    _refused(hw_ca, _csr(key), statement, 401, "does not chain to an attestation root")


def test_csr_for_another_key_than_the_attested_one_is_refused(
    hw_ca: HardwareCA, swtpm: SoftwareTPM, attestation_key: AttestationKey
) -> None:
    attested = create_tpm_key(tcti=swtpm.tcti, pin=PIN)
    other = create_tpm_key(tcti=swtpm.tcti, pin=PIN)
    with hw_ca.client() as client:
        statement = _attestation(client, attested, attestation_key)
    _refused(hw_ca, _csr(other), statement, 401, "not the attested key")


def _certify_software_key(
    swtpm: SoftwareTPM, ak: AttestationKey, key: ec.EllipticCurvePrivateKey, nonce: str
) -> tuple[bytes, bytes, bytes]:
    """What an attacker can get from a real TPM for a software key: load it from outside
    (TPM2_LoadExternal) and have the AK certify it. The TPM marks such keys not fixedTPM.
    """
    from tpm2_pytss import (
        ESYS_TR,
        TPM2_ALG,
        TPM2B_PUBLIC,
        TPM2B_SENSITIVE,
        TPMA_OBJECT,
        TPMT_SIG_SCHEME,
    )

    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    attributes = TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.SIGN_ENCRYPT
    public = TPM2B_PUBLIC.from_pem(pem, objectAttributes=attributes)
    sensitive = TPM2B_SENSITIVE.from_pem(pem)
    with open_tpm(swtpm.tcti) as context, loaded_keys(context, (ak.key._blob, None)) as (signer,):
        handle = context.load_external(public, sensitive, ESYS_TR.RH_NULL)
        try:
            attest, signature = context.certify(
                handle, signer, nonce.encode(), TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL)
            )
        finally:
            context.flush_context(handle)
    return (
        bytes(attest.marshal())[2:],
        bytes(signature.marshal()),
        bytes(public.publicArea.marshal()),
    )


@pytest.mark.parametrize("claim", ["honest-attributes", "forged-fixed-tpm"])
def test_software_key_claiming_to_be_in_hardware_is_refused(
    hw_ca: HardwareCA, swtpm: SoftwareTPM, attestation_key: AttestationKey, claim: str
) -> None:
    from tpm2_pytss import TPMA_OBJECT, TPMT_PUBLIC

    key = ec.generate_private_key(ec.SECP256R1())
    with hw_ca.client() as client:
        nonce = client.attestation_nonce()
    attest, signature, public_area = _certify_software_key(swtpm, attestation_key, key, nonce)
    if claim == "forged-fixed-tpm":
        public, _ = TPMT_PUBLIC.unmarshal(public_area)
        public.objectAttributes |= (
            TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
        )
        public_area = bytes(public.marshal())
    statement = {
        "nonce": nonce,
        "certify_info": base64.b64encode(attest).decode(),
        "signature": base64.b64encode(signature).decode(),
        "public_area": base64.b64encode(public_area).decode(),
        "ak_chain": [
            base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
            for c in attestation_key.chain
        ],
    }
    if claim == "forged-fixed-tpm":
        _refused(hw_ca, _csr(key), statement, 401, "TPM vouched for another key")
    else:
        _refused(hw_ca, _csr(key), statement, 403, "lacks fixedTPM")


def test_garbage_attestation_is_a_problem_not_a_crash(
    hw_ca: HardwareCA, swtpm: SoftwareTPM, attestation_key: AttestationKey
) -> None:
    key, statement = _attested(hw_ca, swtpm, attestation_key)
    statement["certify_info"] = base64.b64encode(b"\x00\x01garbage").decode()
    _refused(hw_ca, _csr(key), statement, 401, "signature does not verify")
    statement["signature"] = base64.b64encode(b"\xff" * 5).decode()
    _refused(hw_ca, _csr(key), statement, 400, "not a valid TPMT_SIGNATURE")


# --------------------------------------------------------------------------- in place


@pytest.fixture
def tpm_identity(
    hw_ca: HardwareCA, swtpm: SoftwareTPM, attestation_key: AttestationKey, tmp_path: Path
) -> tuple[Path, Path]:
    key = create_tpm_key(tcti=swtpm.tcti, pin=PIN)
    with hw_ca.client() as client:
        issued = client.sign_with_attestation(
            _csr(key), ATTEST, _attestation(client, key, attestation_key)
        )
    key_file = tmp_path / "device.key"
    key_file.write_bytes(key.to_pem())
    cert_file = tmp_path / "device.crt"
    cert_file.write_bytes(issued.dump_pem())
    return cert_file, key_file


def test_tpm2_openssl_provider_signs_with_the_saved_key_and_pin(
    swtpm: SoftwareTPM, tpm_identity: tuple[Path, Path], tmp_path: Path
) -> None:
    """The TSS2 PEM we write is what tpm2-openssl reads: it signs in the TPM with the PIN."""
    openssl = require_tool("openssl")
    cert_file, key_file = tpm_identity
    data = tmp_path / "data"
    data.write_bytes(b"signed by the key in the TPM")
    signature = tmp_path / "data.sig"
    env = {**os.environ, "TPM2OPENSSL_TCTI": swtpm.tcti}
    result = subprocess.run(
        [
            openssl,
            "pkeyutl",
            "-sign",
            "-provider",
            "tpm2",
            "-provider",
            "default",
            "-inkey",
            str(key_file),
            "-passin",
            f"pass:{PIN.decode()}",
            "-rawin",
            "-digest",
            "sha256",
            "-in",
            str(data),
            "-out",
            str(signature),
        ],
        capture_output=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    certificate = x509.load_pem_x509_certificate(cert_file.read_bytes())
    public = certificate.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signature.read_bytes(), data.read_bytes(), ec.ECDSA(hashes.SHA256()))


@pytest.fixture
def vault(hw_ca: HardwareCA, upstream: EchoUpstream) -> Iterator[int]:  # noqa: F811
    routes = (Route(prefix="/vault", policy_oids=(HARDWARE_POLICY,)),)
    config = gateway_config(hw_ca.ca, f"http://127.0.0.1:{upstream.port}", routes=routes)
    with run_gateway(config) as gateway:
        yield gateway.port


def _openssl_get(
    brokered: BrokeredTPM, port: int, cert_file: Path, key_file: Path, ca_file: Path, path: str
) -> str:
    """``GET path`` over ``openssl s_client``, the key used in the TPM by tpm2-openssl."""
    openssl = require_tool("openssl")
    env = {
        **os.environ,
        "TPM2OPENSSL_TCTI": brokered.tcti,
        "DBUS_SESSION_BUS_ADDRESS": brokered.bus_address,
    }
    command = [openssl, "s_client", "-quiet", "-provider", "tpm2", "-provider", "default",
               "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
               "-cert", str(cert_file), "-key", str(key_file), "-pass", f"pass:{PIN.decode()}",
               "-CAfile", str(ca_file), "-verify_return_error"]  # fmt: skip
    result = subprocess.run(
        command,
        input=f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode(),
        capture_output=True,
        timeout=60,
        env=env,
        check=False,
    )
    return result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")


def _curl_status(
    brokered: BrokeredTPM, port: int, cert_file: Path, key_file: Path, ca_file: Path, folder: Path
) -> str:
    """curl (OpenSSL 3) with the TPM key, the tpm2 provider loaded by OPENSSL_CONF (docs/tpm.md)."""
    curl = require_tool("curl")
    config = folder / "openssl-tpm2.cnf"
    config.write_text(OPENSSL_TPM2_CONFIG)
    env = {
        **os.environ,
        "OPENSSL_CONF": str(config),
        "TPM2OPENSSL_TCTI": brokered.tcti,
        "DBUS_SESSION_BUS_ADDRESS": brokered.bus_address,
    }
    command = [curl, "-sS", "-o", os.devnull, "-w", "%{http_code}",
               "--resolve", f"localhost:{port}:127.0.0.1", "--cacert", str(ca_file),
               "--cert", str(cert_file), "--key", str(key_file), "--pass", PIN.decode(),
               f"https://localhost:{port}/vault/x"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@contextmanager
def _nginx_client(
    brokered: BrokeredTPM, port: int, cert_file: Path, key_file: Path, ca_file: Path, folder: Path
) -> Iterator[int]:
    """nginx proxying plain HTTP to the gateway, its client key used in the TPM (docs/tpm.md)."""
    binary = require_tool("nginx")
    prefix = folder / "nginx"
    prefix.mkdir()
    listen = free_port()
    config = prefix / "openssl-tpm2.cnf"
    config.write_text(OPENSSL_TPM2_CONFIG)
    pin = prefix / "pin"
    pin.write_text(PIN.decode() + "\n")
    temp = "\n".join(
        f"  {kind}_temp_path {prefix}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (prefix / "nginx.conf").write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"daemon off;\nworker_processes 1;\npid {prefix}/nginx.pid;\n"
        + "env OPENSSL_CONF;\nenv TPM2OPENSSL_TCTI;\nenv DBUS_SESSION_BUS_ADDRESS;\n"
        + f"error_log {prefix}/error.log info;\nevents {{ worker_connections 64; }}\n"
        + f"http {{\n  access_log off;\n{temp}\n"
        + f"  server {{\n    listen 127.0.0.1:{listen};\n    location / {{\n"
        + f"      proxy_pass https://127.0.0.1:{port};\n"
        + f"      proxy_ssl_certificate {cert_file};\n"
        + f"      proxy_ssl_certificate_key {key_file};\n"
        + f"      proxy_ssl_password_file {pin};\n"
        + f"      proxy_ssl_trusted_certificate {ca_file};\n"
        + "      proxy_ssl_verify on;\n      proxy_ssl_name localhost;\n"
        + "      proxy_ssl_protocols TLSv1.3;\n    }\n  }\n}\n"
    )
    env = {
        **os.environ,
        "OPENSSL_CONF": str(config),
        "TPM2OPENSSL_TCTI": brokered.tcti,
        "DBUS_SESSION_BUS_ADDRESS": brokered.bus_address,
    }
    args = [binary, "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf"),
            "-e", str(prefix / "error.log")]  # fmt: skip
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_for_port(listen)
        yield listen
    finally:
        process.terminate()
        process.wait(10)


def test_gateway_route_demanding_the_policy_admits_the_tpm_key_and_keeps_software_out(
    hw_ca: HardwareCA,
    brokered_tpm: BrokeredTPM,
    attestation_ca: AttestationCA,
    vault: int,
    tmp_path: Path,
) -> None:
    ak = create_attestation_key(tcti=brokered_tpm.tcti)
    ak = AttestationKey(ak.key, (attestation_ca.certify_ak(ak.key, DEVICE),))
    key = create_tpm_key(tcti=brokered_tpm.tcti, pin=PIN)
    with hw_ca.client() as client:
        issued = client.sign_with_attestation(_csr(key), ATTEST, _attestation(client, key, ak))
    key_file = tmp_path / "device.key"
    key_file.write_bytes(key.to_pem())
    cert_file = tmp_path / "device.crt"
    cert_file.write_bytes(issued.dump_pem())

    answer = _openssl_get(brokered_tpm, vault, cert_file, key_file, hw_ca.ca.ca_file, "/vault/x")
    assert "HTTP/1.1 200" in answer, answer
    status = _curl_status(brokered_tpm, vault, cert_file, key_file, hw_ca.ca.ca_file, tmp_path)
    assert status == "200"
    with _nginx_client(
        brokered_tpm, vault, cert_file, key_file, hw_ca.ca.ca_file, tmp_path
    ) as port:
        assert httpx.get(f"http://127.0.0.1:{port}/vault/x", timeout=30).status_code == 200
    software = hw_ca.ca.issue("laptop-soft", ("dns:laptop-soft.corp.example",))
    with hw_ca.ca.client(software, vault) as client:
        assert client.get("/vault/x").status_code == 403
    wrong = tmp_path / "other.key"
    wrong.write_bytes(create_tpm_key(tcti=brokered_tpm.tcti, pin=PIN).to_pem())
    answer = _openssl_get(brokered_tpm, vault, cert_file, wrong, hw_ca.ca.ca_file, "/vault/x")
    assert "HTTP/1.1 200" not in answer


def test_ek_certified_ak_through_our_attestation_ca_opens_the_gateway_route(
    hw_ca: HardwareCA,
    brokered_tpm: BrokeredTPM,
    manufacturer: Manufacturer,
    vault: int,
    tmp_path: Path,
) -> None:
    """The whole path with swtpm's EK certificate: EK -> AK certificate from our CA ->
    attested key -> certificate with the policy OID -> the gateway route that demands it."""
    from ostiary.authority.attestation_ca import EK_ROOTS_FILE
    from ostiary.client.tpm_ak import enroll_attestation_key

    store = hw_ca.ca.authority.store
    (hw_ca.ca.authority.ca.paths.root / EK_ROOTS_FILE).write_bytes(manufacturer.roots_pem())
    own_root = hw_ca.ca.authority.ca.root.public_bytes(serialization.Encoding.PEM).decode()
    add_attest_provisioner(
        store,
        AttestProvisioner(
            name="tpm-ek", roots_pem=own_root, policy_oid=HARDWARE_POLICY,
            claims=ProvisionerClaims(lifetime=Lifetime()),
        ),
        now=datetime.now(UTC),
    )  # fmt: skip
    ak = create_attestation_key(tcti=brokered_tpm.tcti).key
    key = create_tpm_key(tcti=brokered_tpm.tcti, pin=PIN)
    with hw_ca.client() as client:
        ak_issued = enroll_attestation_key(client, ak, tcti=brokered_tpm.tcti)
        chain = AttestationKey(ak, (ak_issued.certificate, *ak_issued.chain))
        csr = build_csr(ak_issued.certificate.subject, [], key)
        issued = client.sign_with_attestation(csr, "tpm-ek", _attestation(client, key, chain))
    assert HARDWARE_POLICY in _policies(issued.certificate)
    key_file, cert_file = tmp_path / "device.key", tmp_path / "device.crt"
    key_file.write_bytes(key.to_pem())
    cert_file.write_bytes(issued.dump_pem())
    answer = _openssl_get(brokered_tpm, vault, cert_file, key_file, hw_ca.ca.ca_file, "/vault/x")
    assert "HTTP/1.1 200" in answer, answer


@dataclass
class CliFiles:
    """What the CLI is given: the CA's root, the key's PIN, the attestation key and chain."""

    pin: Path
    attest: list[str | Path]
    where: list[str | Path]


def _cli_files(hw_ca: HardwareCA, attestation_key: AttestationKey, folder: Path) -> CliFiles:
    root = folder / "root.pem"
    root.write_bytes(hw_ca.ca.root_file.read_bytes())
    pin_file = folder / "pin"
    pin_file.write_bytes(PIN + b"\n")
    ak_file = folder / "ak.pem"
    ak_file.write_bytes(attestation_key.key.to_pem())
    ak_chain = folder / "ak-chain.pem"
    ak_chain.write_bytes(pem_chain(attestation_key.chain))
    return CliFiles(
        pin_file,
        ["--attest-key", ak_file, "--attest-chain", ak_chain],
        ["--ca-url", hw_ca.ca.running.server.https_url, "--root", root],
    )


@pytest.fixture
def cli_files(
    hw_ca: HardwareCA,
    swtpm: SoftwareTPM,
    attestation_key: AttestationKey,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> CliFiles:
    """The CLI's files in ``tmp_path``; the TCTI in the environment, and no PIN there."""
    monkeypatch.setenv("OSTIARY_TPM_TCTI", swtpm.tcti)
    monkeypatch.delenv("OSTIARY_TPM_PIN", raising=False)
    return _cli_files(hw_ca, attestation_key, tmp_path)


def test_cli_request_renew_and_p12_with_a_tpm_key(
    hw_ca: HardwareCA,
    swtpm: SoftwareTPM,
    attestation_key: AttestationKey,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.client.conftest import ok, refused

    monkeypatch.setenv("OSTIARY_TPM_TCTI", swtpm.tcti)
    files = _cli_files(hw_ca, attestation_key, tmp_path)
    pin_file = files.pin
    crt, key = tmp_path / "dev.crt", tmp_path / "dev.key"
    where = files.where
    tpm = ["--key-store", "tpm", "--pin-file", pin_file, "--provisioner", ATTEST, *files.attest]
    ok("cert", "request", DEVICE, crt, key, *tpm, *where)
    assert key.read_bytes().startswith(b"-----BEGIN TSS2 PRIVATE KEY-----")
    assert key.stat().st_mode & 0o777 == 0o600
    first = x509.load_pem_x509_certificate(crt.read_bytes())
    assert HARDWARE_POLICY in _policies(first)

    result = refused("cert", "p12", tmp_path / "dev.p12", crt, key, "--no-password")
    assert "held by a TPM" in result.stderr
    assert not (tmp_path / "dev.p12").exists()

    ok("cert", "renew", crt, key, "--force", "--pin-file", pin_file, *where)
    renewed = x509.load_pem_x509_certificate(crt.read_bytes())
    assert renewed.serial_number != first.serial_number
    assert renewed.public_key() == first.public_key()  # the same key, still in the TPM
    assert HARDWARE_POLICY in _policies(renewed)

    result = refused("cert", "renew", crt, key, "--force", "--rekey", "--pin-file", pin_file,
                     *where)  # fmt: skip
    assert "without --rekey" in result.stderr
    wrong = tmp_path / "wrong-pin"
    wrong.write_text("0000\n")
    result = refused("cert", "renew", crt, key, "--force", "--pin-file", wrong, *where)
    assert "the TPM refused the PIN" in result.stderr
    assert x509.load_pem_x509_certificate(crt.read_bytes()) == renewed

    result = refused("cert", "request", DEVICE, tmp_path / "x.crt", tmp_path / "x.key",
                     "--kty", "rsa2048", *tpm, *where)  # fmt: skip
    assert "a TPM key is P-256" in result.stderr
    assert not (tmp_path / "x.key").exists()

    result = refused("cert", "revoke", "--cert", crt, "--key", key, *where)
    assert f"TPM key {key} has a PIN: set OSTIARY_TPM_PIN" in result.stderr  # it has no option
    monkeypatch.setenv("OSTIARY_TPM_PIN", PIN.decode())  # revoke reads the PIN from here
    ok("cert", "revoke", "--cert", crt, "--key", key, *where)
    status = hw_ca.ca.authority.store
    with status.transaction(read_only=True) as session:
        record = session.scalars(
            select(CertificateRecord).where(
                CertificateRecord.serial == f"{renewed.serial_number:x}"
            )
        ).one()
    assert record.status == "revoked"


def test_token_provisioner_requiring_attestation_refuses_without_and_issues_with(
    hw_ca: HardwareCA, swtpm: SoftwareTPM, attestation_key: AttestationKey
) -> None:
    store = hw_ca.ca.authority.store
    require_attestation(store, OPS, ATTEST, now=datetime.now(UTC), actor="test")
    try:
        running = hw_ca.ca.running
        key = create_tpm_key(tcti=swtpm.tcti, pin=PIN)
        csr = _csr(key, "alice@example.com")
        token = running.sign_token("alice@example.com")
        before = hw_ca.certificate_count()
        with hw_ca.client() as client:
            with pytest.raises(PolicyDenied, match="requires a TPM attestation"):
                client.sign(csr, token)
            assert hw_ca.certificate_count() == before
            attestation = _attestation(client, key, attestation_key)
            forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
            with pytest.raises(Unauthorized):
                client.sign(csr, forged, attestation=attestation)
            assert hw_ca.certificate_count() == before
            # neither the token nor the attestation's nonce was spent by the refusals
            issued = client.sign(csr, token, attestation=attestation)
        assert HARDWARE_POLICY in _policies(issued.certificate)
    finally:
        require_attestation(store, OPS, None, now=datetime.now(UTC), actor="test")


def test_attestation_sent_to_a_provisioner_that_does_not_take_one_is_refused(
    hw_ca: HardwareCA, swtpm: SoftwareTPM, attestation_key: AttestationKey
) -> None:
    key = create_tpm_key(tcti=swtpm.tcti, pin=PIN)
    with hw_ca.client() as client:
        attestation = _attestation(client, key, attestation_key)
        token = hw_ca.ca.running.sign_token("alice@example.com")
        with pytest.raises(BadRequest, match="does not take key attestations"):
            client.sign(_csr(key, "alice@example.com"), token, attestation=attestation)


def test_attested_certificate_renews_with_its_key_but_not_onto_a_new_one(
    hw_ca: HardwareCA, swtpm: SoftwareTPM, attestation_key: AttestationKey
) -> None:
    key = create_tpm_key(tcti=swtpm.tcti, pin=PIN)
    with hw_ca.client() as client:
        issued = client.sign_with_attestation(
            _csr(key), ATTEST, _attestation(client, key, attestation_key)
        )
        software = ec.generate_private_key(ec.SECP256R1())
        before = hw_ca.certificate_count()
        with pytest.raises(PolicyDenied, match="requires an attested key"):
            client.renew(issued.certificate, key, _csr(software), via="token")
        assert hw_ca.certificate_count() == before
        renewed = client.renew(issued.certificate, key, via="token")
    assert renewed.certificate.public_key() == key.public_key()
    assert HARDWARE_POLICY in _policies(renewed.certificate)


APPROVAL_HW = "desk-hw"


def _approval_requiring_attestation(hw_ca: HardwareCA) -> None:
    store = hw_ca.ca.authority.store
    with store.transaction(read_only=True) as session:
        from ostiary.store import ProvisionerRepository

        if any(r.name == APPROVAL_HW for r in ProvisionerRepository(session).list()):
            return
    add_approval_provisioner(
        store,
        APPROVAL_HW,
        claims=ProvisionerClaims(lifetime=Lifetime()),
        now=datetime.now(UTC),
        profile="client",
        require_code=False,
        ca_claims=ProvisionerClaims(lifetime=Lifetime()),
        actor="test",
    )
    require_attestation(store, APPROVAL_HW, ATTEST, now=datetime.now(UTC), actor="test")


def _request_count(hw_ca: HardwareCA) -> int:
    with hw_ca.ca.authority.store.transaction(read_only=True) as session:
        return int(session.scalar(select(func.count()).select_from(CertificateRequest)) or 0)


def test_officer_approval_requiring_attestation_gives_the_hardware_policy(
    hw_ca: HardwareCA, swtpm: SoftwareTPM, attestation_key: AttestationKey
) -> None:
    _approval_requiring_attestation(hw_ca)
    key = create_tpm_key(tcti=swtpm.tcti, pin=PIN)
    csr = _csr(key, "bob@example.com")
    before = _request_count(hw_ca)
    with hw_ca.client() as client:
        with pytest.raises(PolicyDenied, match="requires a TPM attestation"):
            client.submit_request(csr, APPROVAL_HW)
        assert _request_count(hw_ca) == before  # refused before anything is recorded
        attestation = _attestation(client, key, attestation_key)
        answer = client.submit_request(csr, APPROVAL_HW, attestation=attestation)
        with pytest.raises(Conflict, match="already used"):  # the nonce was spent at submission
            client.submit_request(csr, APPROVAL_HW, attestation=attestation)
        assert _request_count(hw_ca) == before + 1
        certificate = approve_request(
            hw_ca.ca.authority, answer["request_id"], officer="officer:test"
        )
        status = client.request_status(answer["request_id"])
    assert status["status"] == "issued"
    assert certificate.public_key() == key.public_key()
    assert HARDWARE_POLICY in _policies(certificate)


def test_cli_approval_with_a_tpm_key_submits_then_collects(
    hw_ca: HardwareCA,
    swtpm: SoftwareTPM,
    attestation_key: AttestationKey,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.client.conftest import ok

    _approval_requiring_attestation(hw_ca)
    monkeypatch.setenv("OSTIARY_TPM_TCTI", swtpm.tcti)
    files = _cli_files(hw_ca, attestation_key, tmp_path)
    crt, key = tmp_path / "desk.crt", tmp_path / "desk.key"
    args = ["cert", "request", "carol", crt, key, "--key-store", "tpm",
            "--pin-file", files.pin, "--provisioner", APPROVAL_HW, *files.attest,
            *files.where]  # fmt: skip
    ok(*args)  # submitted; the TPM key is saved, no certificate yet
    assert key.read_bytes().startswith(b"-----BEGIN TSS2 PRIVATE KEY-----")
    assert not crt.exists()
    request_id = (tmp_path / "desk.crt.request").read_text().splitlines()[0]
    approve_request(hw_ca.ca.authority, request_id, officer="officer:test")
    ok(*args, "--wait")  # resumes with the key in the TPM and collects the certificate
    issued = x509.load_pem_x509_certificate(crt.read_bytes())
    assert (
        issued.public_key()
        == load_tpm_key_pem(key.read_bytes(), tcti=swtpm.tcti, pin=PIN).public_key()
    )
    assert HARDWARE_POLICY in _policies(issued)
    assert not (tmp_path / "desk.crt.request").exists()


def test_cli_approval_with_a_tpm_key_rejected_removes_the_key_file_once(
    hw_ca: HardwareCA,
    swtpm: SoftwareTPM,
    attestation_key: AttestationKey,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.client.conftest import ok, refused

    _approval_requiring_attestation(hw_ca)
    monkeypatch.setenv("OSTIARY_TPM_TCTI", swtpm.tcti)
    files = _cli_files(hw_ca, attestation_key, tmp_path)
    crt, key = tmp_path / "desk.crt", tmp_path / "desk.key"
    marker = tmp_path / "desk.crt.request"
    args = ["cert", "request", "dave", crt, key, "--key-store", "tpm",
            "--pin-file", files.pin, "--provisioner", APPROVAL_HW, *files.attest,
            *files.where]  # fmt: skip
    ok(*args)
    request_id = marker.read_text().splitlines()[0]
    reject_request(hw_ca.ca.authority, request_id, officer="officer:test", reason="not ours")
    told = refused(*args)
    assert f"request {request_id} was rejected by an officer: not ours" in told.stderr
    assert not key.exists() and not marker.exists() and not crt.exists()
    ok(*args)  # the next run is a new request, with a new key in the TPM
    assert marker.read_text().splitlines()[0] != request_id and key.exists()


def test_the_in_process_token_path_refuses_a_provisioner_that_requires_attestation(
    hw_ca: HardwareCA, swtpm: SoftwareTPM
) -> None:
    """``authorize_sign`` carries no attestation: it must refuse, not skip the check."""
    store = hw_ca.ca.authority.store
    require_attestation(store, OPS, ATTEST, now=datetime.now(UTC), actor="test")
    try:
        ca = hw_ca.ca.authority.ca
        identity = CAIdentity.from_certificates(ca.root, ca.intermediate)
        csr = _csr(create_tpm_key(tcti=swtpm.tcti, pin=PIN), "alice@example.com")
        token = hw_ca.ca.running.sign_token("alice@example.com")
        with pytest.raises(PolicyDenied, match="requires a TPM attestation"):
            authorize_sign(store, token, csr, ca=identity, now=datetime.now(UTC))
    finally:
        require_attestation(store, OPS, None, now=datetime.now(UTC), actor="test")
    # With the requirement lifted the same token is still good: the refusal spent nothing.
    assert authorize_sign(store, token, csr, ca=identity, now=datetime.now(UTC)).policies == ()


# --------------------------------------------------------------------------- an honest PIN


def _on_terminal(
    args: list[str | Path], answers: list[bytes], env: dict[str, str]
) -> tuple[int, str]:
    """Run ``ostiary`` on a pseudo-terminal, typing each answer after a prompt."""
    import pty
    import re
    import select
    import signal
    import sys
    import termios
    import time

    program = str(Path(sys.executable).parent / "ostiary")
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes ostiary, its stdin a terminal
        os.execve(program, [program, *map(str, args)], env)
    output = transcript = b""
    pending = list(answers)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
            transcript += chunk
            if pending and output.rstrip().endswith(b":"):
                # Type only once getpass has turned echo off (it flushes earlier input).
                while termios.tcgetattr(fd)[3] & termios.ECHO and time.monotonic() < deadline:
                    time.sleep(0.01)
                os.write(fd, pending.pop(0) + b"\n")
                output = b""
    finally:
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    text = re.sub(r"\x1b\[[0-9;]*m", "", transcript.decode(errors="replace"))
    return os.waitstatus_to_exitcode(status), text


def _terminal_env(swtpm: SoftwareTPM) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OSTIARY_TPM_PIN"}
    return {**env, "OSTIARY_TPM_TCTI": swtpm.tcti, "NO_COLOR": "1"}


def test_tpm_key_request_asks_for_the_pin_on_a_terminal_and_the_key_has_it(
    hw_ca: HardwareCA, swtpm: SoftwareTPM, attestation_key: AttestationKey, tmp_path: Path
) -> None:
    files = _cli_files(hw_ca, attestation_key, tmp_path)
    crt, key = tmp_path / "dev.crt", tmp_path / "dev.key"
    args: list[str | Path] = ["cert", "request", DEVICE, crt, key, "--key-store", "tpm",
                              "--provisioner", ATTEST, *files.attest, *files.where]  # fmt: skip
    code, output = _on_terminal(args, [PIN, PIN], _terminal_env(swtpm))
    assert code == 0, output
    assert PIN.decode() not in output  # not echoed
    loaded = load_tpm_key_pem(key.read_bytes(), tcti=swtpm.tcti, pin=PIN)
    with pytest.raises(BadRequest, match="has a PIN"):
        load_tpm_key_pem(key.read_bytes(), tcti=swtpm.tcti, pin=None)
    assert x509.load_pem_x509_certificate(crt.read_bytes()).public_key() == loaded.public_key()


def test_empty_pin_on_the_terminal_is_refused_and_nothing_is_made(
    hw_ca: HardwareCA, swtpm: SoftwareTPM, attestation_key: AttestationKey, tmp_path: Path
) -> None:
    files = _cli_files(hw_ca, attestation_key, tmp_path)
    crt, key = tmp_path / "dev.crt", tmp_path / "dev.key"
    args: list[str | Path] = ["cert", "request", DEVICE, crt, key, "--key-store", "tpm",
                              "--provisioner", ATTEST, *files.attest, *files.where]  # fmt: skip
    before = hw_ca.certificate_count()
    code, output = _on_terminal(args, [b""], _terminal_env(swtpm))
    assert code == 1, output
    assert "error: the PIN is empty: for a key without a PIN give --no-pin" in output
    assert not key.exists() and not crt.exists()
    assert hw_ca.certificate_count() == before
    assert swtpm.transient_count() == 0


def test_without_a_terminal_a_pin_or_no_pin_must_be_given(
    swtpm: SoftwareTPM, cli_files: CliFiles, tmp_path: Path
) -> None:
    from tests.client.conftest import ok, refused

    files = cli_files
    crt, key = tmp_path / "dev.crt", tmp_path / "dev.key"
    args = ["cert", "request", DEVICE, crt, key, "--key-store", "tpm", "--provisioner", ATTEST,
            *files.attest, *files.where]  # fmt: skip
    result = refused(*args)
    assert "a TPM key needs a PIN" in result.stderr
    assert not key.exists()
    refused(*args, "--no-pin", "--pin-file", files.pin)
    ok(*args, "--no-pin")
    assert load_tpm_key_pem(key.read_bytes(), tcti=swtpm.tcti, pin=None).public_key() is not None


# --------------------------------------------------------------------------- renewal and lockout


@dataclass
class Issued:
    """A certificate and its PIN-protected TPM key, from ``cert request``."""

    files: CliFiles
    crt: Path
    key: Path


@pytest.fixture
def issued(cli_files: CliFiles, tmp_path: Path) -> Issued:
    """Issued through the CLI (see ``cli_files``)."""
    from tests.client.conftest import ok

    files = cli_files
    crt, key = tmp_path / "dev.crt", tmp_path / "dev.key"
    ok("cert", "request", DEVICE, crt, key, "--key-store", "tpm", "--pin-file", files.pin,
       "--provisioner", ATTEST, *files.attest, *files.where)  # fmt: skip
    return Issued(files, crt, key)


def _daemon(
    swtpm: SoftwareTPM, files: CliFiles, crt: Path, key: Path, pin: Path
) -> subprocess.CompletedProcess[str]:
    """``cert renew --daemon`` as systemd runs it; it must end by itself."""
    import sys

    program = str(Path(sys.executable).parent / "ostiary")
    env = {**os.environ, "OSTIARY_TPM_TCTI": swtpm.tcti, "NO_COLOR": "1"}
    env.pop("OSTIARY_TPM_PIN", None)
    args = [program, "cert", "renew", str(crt), str(key), "--daemon", "--force",
            "--retry-max", "2s", "--pin-file", str(pin), *map(str, files.where)]  # fmt: skip
    try:
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the daemon kept retrying: {exc.stderr!r}")


def _lockout_counter(swtpm: SoftwareTPM) -> int:
    from tpm2_pytss import TPM2_CAP, TPM2_PT

    with open_tpm(swtpm.tcti) as context:
        _, data = context.get_capability(TPM2_CAP.TPM_PROPERTIES, TPM2_PT.LOCKOUT_COUNTER, 1)
        return int(data.data.tpmProperties[0].value)


def test_renewal_daemon_stops_on_a_wrong_pin_before_a_lockout(
    issued: Issued, swtpm: SoftwareTPM, tmp_path: Path
) -> None:
    from tests.client.conftest import ok

    files, crt, key = issued.files, issued.crt, issued.key
    before = crt.read_bytes()
    wrong = tmp_path / "wrong-pin"
    wrong.write_text("0000\n")
    result = _daemon(swtpm, files, crt, key, wrong)
    assert result.returncode == 1, result.stderr
    assert "the TPM refused the PIN" in result.stderr
    assert "stopping, no further attempts" in result.stderr
    assert crt.read_bytes() == before
    assert _lockout_counter(swtpm) == 1  # one try spent, the TPM not locked
    ok("cert", "renew", crt, key, "--force", "--pin-file", files.pin, *files.where)


def test_lockout_stops_the_daemon_and_its_recovery_command_works_as_printed(
    issued: Issued, swtpm: SoftwareTPM, tmp_path: Path
) -> None:
    import re
    import shlex

    from ostiary.client.tpm import TpmLockout

    files, crt, key = issued.files, issued.crt, issued.key
    wrong = load_tpm_key_pem(key.read_bytes(), tcti=swtpm.tcti, pin=b"0000")
    for _ in range(10):  # swtpm allows a few wrong PINs, then locks every key out
        try:
            wrong.sign(b"x", ec.ECDSA(hashes.SHA256()))
        except WrongPassword:
            continue
        except TpmLockout:
            break
    else:
        pytest.fail("the TPM never locked out")
    result = _daemon(swtpm, files, crt, key, files.pin)  # the right PIN: still locked
    assert result.returncode == 1, result.stderr
    assert "dictionary-attack lockout" in result.stderr
    printed = re.search(r"tpm2_dictionarylockout -T '[^']+' --clear-lockout", result.stderr)
    assert printed is not None, result.stderr
    subprocess.run(shlex.split(printed.group(0)), check=True, capture_output=True, timeout=30)
    from tests.client.conftest import ok

    ok("cert", "renew", crt, key, "--force", "--pin-file", files.pin, *files.where)


def test_renew_all_takes_the_tpm_pin_from_a_file_and_names_both_ways_when_missing(
    issued: Issued, swtpm: SoftwareTPM, tmp_path: Path
) -> None:
    from tests.client.conftest import run_cli

    files, crt, key = issued.files, issued.crt, issued.key
    first = crt.read_bytes()
    due = ["cert", "renew-all", tmp_path, "--expires-in", "3650d", *files.where]

    result = run_cli(*due)
    assert result.exit_code == 1, result.stderr
    assert f"TPM key {key} has a PIN: give --tpm-pin-file, or set OSTIARY_TPM_PIN" in result.stderr
    assert "1 failed" in result.stderr
    wrong = tmp_path / "wrong-pin"
    wrong.write_text("0000\n")
    result = run_cli(*due, "--tpm-pin-file", wrong)
    assert result.exit_code == 1, result.stderr
    assert "the TPM refused the PIN" in result.stderr
    assert crt.read_bytes() == first

    result = run_cli(*due, "--tpm-pin-file", files.pin)
    assert result.exit_code == 0, result.stderr
    assert "1 renewed" in result.stderr
    renewed = x509.load_pem_x509_certificate(crt.read_bytes())
    assert renewed != x509.load_pem_x509_certificate(first)
    assert renewed.public_key() == x509.load_pem_x509_certificate(first).public_key()


def _marked_as_having_a_pin(ak: TpmPrivateKey, path: Path) -> Path:
    """The AK's file as tpm2-tools' ``encodeobject`` writes it without ``-p``: the same key,
    the file claiming it has a PIN."""
    from tpm2_pytss.tsskey import TSSPrivKey

    blob = TSSPrivKey.from_pem(ak.to_pem())
    marked = TSSPrivKey(blob.private, blob.public, empty_auth=False, parent=blob.parent)
    path.write_bytes(marked.to_pem())
    return path


def test_an_ak_marked_as_having_a_pin_is_named_as_the_ak_not_the_client_key(
    hw_ca: HardwareCA,
    swtpm: SoftwareTPM,
    attestation_key: AttestationKey,
    cli_files: CliFiles,
    tmp_path: Path,
) -> None:
    from tests.client.conftest import ok, refused

    files = cli_files
    marked = _marked_as_having_a_pin(attestation_key.key, tmp_path / "marked-ak.pem")
    crt, key = tmp_path / "dev.crt", tmp_path / "dev.key"
    request = ["cert", "request", DEVICE, crt, key, "--key-store", "tpm", "--pin-file",
               files.pin, "--provisioner", ATTEST]  # fmt: skip
    before = hw_ca.certificate_count()
    result = refused(*request, "--attest-key", marked, "--attest-chain", files.attest[3],
                     *files.where)  # fmt: skip
    line = result.stderr.strip().splitlines()[-1]
    assert f"attestation key {marked} (--attest-key) is marked as having a PIN" in line
    assert "--pin-file is the PIN of the key being enrolled" in line
    assert "ostiary tpm ak create" in line
    assert str(key) not in line and "give --pin-file" not in line
    assert not key.exists() and not crt.exists()
    assert hw_ca.certificate_count() == before
    assert swtpm.transient_count() == 0

    out = tmp_path / "ak-chain-new.pem"
    result = refused("tpm", "ak", "enroll", "--ak", marked, "--out", out, *files.where)
    line = result.stderr.strip().splitlines()[-1]
    assert f"attestation key {marked} (--ak) is marked as having a PIN" in line
    assert "--pin-file" not in line  # ak enroll has none to give
    assert not out.exists()

    ok(*request, *files.attest, *files.where)  # the same AK, its file honest
    issued = x509.load_pem_x509_certificate(crt.read_bytes())
    assert HARDWARE_POLICY in _policies(issued)
    assert load_tpm_key_pem(key.read_bytes(), tcti=swtpm.tcti, pin=PIN).public_key() == (
        issued.public_key()
    )


def test_attested_enrollment_is_refused_and_changes_nothing_while_the_audit_log_cannot_be_written(
    hw_ca: HardwareCA, swtpm: SoftwareTPM, attestation_key: AttestationKey
) -> None:
    """Issue 19: POST /provisioners/NAME/attest is a 503 ``audit-unavailable`` problem with
    Retry-After; no certificate, and the attestation's nonce is not spent, so the same
    attested request is issued once the fault is gone."""
    key, statement = _attested(hw_ca, swtpm, attestation_key)
    before = hw_ca.certificate_count()
    with audit_refused(hw_ca.ca.authority.store.engine):
        assert_audit_unavailable(_post(hw_ca, _csr(key), statement))
        assert hw_ca.certificate_count() == before
    assert _post(hw_ca, _csr(key), statement).status_code == 201
    assert hw_ca.certificate_count() == before + 1
