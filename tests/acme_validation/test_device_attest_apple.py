"""device-attest-01, ``apple`` format. No Apple device is here, so the chain is synthetic:
a root, an intermediate and a leaf made in the test with the extensions Apple's leaves carry
(serial, UDID, freshness code), and the root handed over as the provisioner's configured
attestation roots, replacing the pinned Apple root. The pinned root itself is checked by
fingerprint.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from ostiary.acme.validation.apple import (
    APPLE_FRESHNESS_CODE_OID,
    APPLE_SERIAL_NUMBER_OID,
    APPLE_UDID_OID,
    apple_enterprise_attestation_root,
)
from ostiary.acme.validation.base import ChallengeContext, ChallengeFailed, ValidationSettings
from ostiary.acme.validation.device_attest import (
    validate_device_attest01,
    verify_device_attestation,
)
from ostiary.client.acme_attest import encode_attestation_object
from ostiary.core.jws import b64url

SERIAL = "C02XK1ABJGH5"
#: Attestation-object-like CBOR: maps with a format and a statement of odd members.
_CBOR = st.fixed_dictionaries(
    {
        "fmt": st.sampled_from(["apple", "tpm", "packed", ""]) | st.binary(max_size=4),
        "attStmt": st.dictionaries(
            st.sampled_from(["x5c", "ver", "alg", "sig", "certInfo", "pubArea"]),
            st.lists(st.binary(max_size=40), max_size=5)
            | st.integers()
            | st.text(max_size=5)
            | st.binary(max_size=40),
            max_size=6,
        )
        | st.integers(),
    }
)
UDID = "00008103-001A2B3C4D5E001E"
DER = serialization.Encoding.DER


def _ca(name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None) -> Any:
    key = ec.generate_private_key(ec.SECP384R1())
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)])
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()),
            critical=False,
        )
    return builder.sign(signer, hashes.SHA384()), key


@dataclass
class AppleDevice:
    """A synthetic Apple attestation chain maker: what an Apple device would send."""

    root: x509.Certificate
    intermediate: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]

    def attest(
        self, token: str, *, freshness: bytes | None = None, fresh: bool = True
    ) -> tuple[list[bytes], ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "device")]))
            .issuer_name(self.intermediate[0].subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.intermediate[1].public_key()
                ),
                critical=False,
            )
            .add_extension(
                x509.UnrecognizedExtension(APPLE_SERIAL_NUMBER_OID, SERIAL.encode()),
                critical=False,
            )
            .add_extension(
                x509.UnrecognizedExtension(APPLE_UDID_OID, UDID.encode()), critical=False
            )
        )
        if fresh:
            code = freshness or hashlib.sha256(token.encode()).digest()
            builder = builder.add_extension(
                x509.UnrecognizedExtension(APPLE_FRESHNESS_CODE_OID, code), critical=False
            )
        leaf = builder.sign(self.intermediate[1], hashes.SHA256())
        return [leaf.public_bytes(DER), self.intermediate[0].public_bytes(DER)], key


@pytest.fixture(scope="module")
def device() -> AppleDevice:
    root, root_key = _ca("Synthetic Enterprise Attestation Root", None)
    return AppleDevice(root, _ca("Synthetic Attestation Sub CA", (root, root_key)))


def _context(
    device: AppleDevice,
    identifier: str,
    x5c: list[bytes] | None,
    *,
    token: str | None = None,
    policy: dict[str, Any] | None = None,
    fmt: str = "apple",
) -> ChallengeContext:
    token = token or secrets.token_urlsafe(32)
    statement: dict[str, Any] = {} if x5c is None else {"x5c": x5c}
    return ChallengeContext(
        challenge_type="device-attest-01",
        identifier_type="permanent-identifier",
        identifier_value=identifier,
        token=token,
        key_authorization=f"{token}.{secrets.token_urlsafe(32)}",
        payload={"attObj": encode_attestation_object(fmt, statement)},
        policy={"attestation_roots": [device.root], **(policy or {})},
    )


def _validate(context: ChallengeContext) -> Any:
    return asyncio.run(validate_device_attest01(context, ValidationSettings()))


def _fails(context: ChallengeContext) -> ChallengeFailed:
    with pytest.raises(ChallengeFailed) as failed:
        _validate(context)
    return failed.value


@pytest.mark.parametrize("identifier", [SERIAL, UDID], ids=["ok/serial", "ok/udid"])
def test_apple_attestation_validates_and_names_the_secure_enclave_key(
    device: AppleDevice, identifier: str
) -> None:
    token = secrets.token_urlsafe(32)
    x5c, key = device.attest(token)
    result = _validate(_context(device, identifier, x5c, token=token))
    assert result.hardware_key is True
    assert result.attested_spki_der == key.public_key().public_bytes(
        DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_issued_client_identifier_need_not_be_the_serial(device: AppleDevice) -> None:
    token = secrets.token_urlsafe(32)
    x5c, _ = device.attest(token)
    context = _context(
        device, "one-time-7f3a", x5c, token=token, policy={"issued_client_identifier": True}
    )
    assert _validate(context).hardware_key is True
    refused = _context(device, "one-time-7f3a", x5c, token=token)
    assert "neither the serial number nor the UDID" in _fails(refused).detail


def test_statement_without_a_freshness_code_is_refused(device: AppleDevice) -> None:
    token = secrets.token_urlsafe(32)
    x5c, _ = device.attest(token, fresh=False)
    failed = _fails(_context(device, SERIAL, x5c, token=token))
    assert failed.problem == "badAttestationStatement"
    assert "no freshness code" in failed.detail


def test_freshness_code_of_another_challenge_is_refused(device: AppleDevice) -> None:
    x5c, _ = device.attest(secrets.token_urlsafe(32))
    failed = _fails(_context(device, SERIAL, x5c))
    assert "freshness code is not SHA-256 of this challenge's token" in failed.detail


def test_freshness_code_over_the_key_authorization_is_refused(device: AppleDevice) -> None:
    token = secrets.token_urlsafe(32)
    context = _context(device, SERIAL, [], token=token)
    digest = hashlib.sha256(context.key_authorization.encode()).digest()
    x5c, _ = device.attest(token, freshness=digest)
    assert "freshness code" in _fails(_context(device, SERIAL, x5c, token=token)).detail


def test_identifier_that_is_not_the_devices_is_refused(device: AppleDevice) -> None:
    token = secrets.token_urlsafe(32)
    x5c, _ = device.attest(token)
    failed = _fails(_context(device, "C02OTHERDEVICE", x5c, token=token))
    assert failed.problem == "badAttestationStatement"
    assert "neither the serial number nor the UDID" in failed.detail


def test_chain_not_from_the_configured_roots_is_refused(device: AppleDevice) -> None:
    token = secrets.token_urlsafe(32)
    x5c, _ = device.attest(token)
    other, _ = _ca("Another Root", None)
    failed = _fails(
        _context(device, SERIAL, x5c, token=token, policy={"attestation_roots": [other]})
    )
    assert "does not chain to an attestation root" in failed.detail


def test_pinned_apple_root_is_used_without_configured_roots(device: AppleDevice) -> None:
    root = apple_enterprise_attestation_root()
    assert root.fingerprint(hashes.SHA256()).hex() == (
        "ccf59ef8fcb3017d97f8b5fa6fa90e7a3f9283f76b55ac6cf6eda8b8b949f05b"
    )
    assert root.subject.rfc4514_string() == (
        "C=US,O=Apple Inc.,CN=Apple Enterprise Attestation Root CA"
    )
    token = secrets.token_urlsafe(32)
    x5c, _ = device.attest(token)
    context = _context(device, SERIAL, x5c, token=token, policy={"attestation_roots": []})
    assert "does not chain to an attestation root of Apple" in _fails(context).detail


def test_statement_without_certificates_says_the_device_did_not_attest(
    device: AppleDevice,
) -> None:
    assert "did not attest its key" in _fails(_context(device, SERIAL, None)).detail


@pytest.mark.parametrize(
    ("fmt", "policy"),
    [
        pytest.param("apple", {"attestation_formats": ["tpm"]}, id="fail/apple-disabled"),
        pytest.param("packed", {}, id="fail/unknown-format"),
    ],
)
def test_format_not_enabled_is_refused(
    device: AppleDevice, fmt: str, policy: dict[str, Any]
) -> None:
    token = secrets.token_urlsafe(32)
    x5c, _ = device.attest(token)
    failed = _fails(_context(device, SERIAL, x5c, token=token, policy=policy, fmt=fmt))
    assert failed.problem == "badAttestationStatement"
    assert "is not accepted here" in failed.detail


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({}, id="fail/no-attobj"),
        pytest.param({"attObj": "not base64url!"}, id="fail/not-base64url"),
        pytest.param({"attObj": "AAAA"}, id="fail/not-a-map"),
        pytest.param(
            {"attObj": encode_attestation_object("apple", {}).replace("o", "_")},
            id="fail/garbled",
        ),
        pytest.param({"error": {"type": "x"}}, id="fail/device-error"),
    ],
)
def test_malformed_challenge_response_is_refused_in_one_line(
    device: AppleDevice, payload: dict[str, Any]
) -> None:
    context = ChallengeContext(
        challenge_type="device-attest-01",
        identifier_type="permanent-identifier",
        identifier_value=SERIAL,
        token="t" * 43,
        key_authorization="t.x",
        payload=payload,
        policy={"attestation_roots": [device.root]},
    )
    failed = _fails(context)
    assert failed.problem == "badAttestationStatement"
    assert "\n" not in failed.detail


@given(data=st.binary(max_size=300) | st.builds(cbor2.dumps, _CBOR))
@settings(max_examples=300, deadline=None)
def test_any_attestation_object_fails_cleanly_or_validates(data: bytes) -> None:
    """Whatever a client posts, the answer is a ChallengeFailed, never another exception."""
    context = ChallengeContext(
        challenge_type="device-attest-01",
        identifier_type="permanent-identifier",
        identifier_value=SERIAL,
        token="t" * 43,
        key_authorization="t.x",
        payload={"attObj": b64url(data)},
        policy={"attestation_roots": [apple_enterprise_attestation_root()]},
    )
    with pytest.raises(ChallengeFailed):
        verify_device_attestation(context, now=datetime.now(UTC))
