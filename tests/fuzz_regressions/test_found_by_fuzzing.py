"""Inputs the parser fuzzers (``fuzz/``) found to end in an exception that is not one of our
errors, each next to a well-formed twin. The inputs are the fuzzers' own, in ``inputs/``.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from typer.testing import CliRunner

from ostiary._tss import import_tss
from ostiary.acme.validation.base import ChallengeContext, ChallengeFailed
from ostiary.acme.validation.device_attest import verify_device_attestation
from ostiary.cli.main import app
from ostiary.client.enrollment import build_csr
from ostiary.config import CAConfig, dump_config, load_config
from ostiary.core.describe import (
    describe_certificate,
    describe_csr,
    entra_certificate_user_ids,
)
from ostiary.core.encoding import (
    format_serial,
    load_certificate,
    load_certificate_chain,
    load_csr,
)
from ostiary.core.errors import BadRequest, InvalidCSR, MalformedInput
from ostiary.core.issuance import verify_csr
from ostiary.core.jws import b64url
from ostiary.core.lifetime import parse_duration
from ostiary.provisioners.jwk import JWKProvisioner
from ostiary.provisioners.tpm_statement import tpm_name, unmarshal_tpm
from ostiary.scep.message import open_message, read_envelope
from ostiary.ssh.certificate import load_ssh_public_key_line
from tests.scep.client import Request as ScepRequest
from tests.scep.client import make_csr, self_signed

INPUTS = Path(__file__).parent / "inputs"


def _inspect(path: Path) -> dict[str, object]:
    result = CliRunner().invoke(
        app, ["cert", "inspect", str(path), "--format", "json"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.stderr + result.stdout
    described = json.loads(result.stdout)
    assert isinstance(described, dict)  # one object: a list only for a chain
    return described


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        # public_key() raised UnsupportedAlgorithm in describe_certificate
        ("certificate-unknown-curve.der", "Curve 1.2.840.12093.3.1.7 is not supported"),
        # the issuer Name is parsed on first use: rfc4514_string() raised ValueError
        ("certificate-bad-issuer.der", "error parsing asn1 value"),
        # x509.InvalidVersion is not a ValueError: it escaped the loader
        ("certificate-bad-version.der", "35 is not a valid X509 version"),
    ],
)
def test_a_certificate_readable_only_in_part_is_refused_at_load(name: str, reason: str) -> None:
    """Found by the ``certificate`` harness; the loader now reads every part at once."""
    data = (INPUTS / name).read_bytes()
    with pytest.raises(MalformedInput, match=reason):
        load_certificate(data)
    with pytest.raises(MalformedInput, match=reason):
        load_certificate_chain(data)
    result = CliRunner().invoke(app, ["cert", "inspect", str(INPUTS / name)])
    assert result.exit_code != 0
    assert result.stderr.strip().startswith("error: ") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive")
def test_a_certificate_with_a_negative_serial_is_described() -> None:
    """Found by the ``certificate`` harness: format_serial raised OverflowError."""
    path = INPUTS / "certificate-negative-serial.der"
    certificate = load_certificate(path.read_bytes())
    assert certificate.serial_number < 0
    serial = "E7:1C:42:57:6A:5C:16:56:62:EF:73:4B:BF:6E:12:7C:A6:AF:32:44"
    assert describe_certificate(certificate)["serial_number"] == serial
    assert _inspect(path)["serial_number"] == serial
    assert format_serial(255) == "00:FF" and format_serial(-1) == "FF"  # twins


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("csr-bad-subject.der", "error parsing asn1 value"),  # subject parsed on first use
        ("csr-bad-version.der", "93 is not a valid CSR version"),  # x509.InvalidVersion
        ("csr-bitstring-name.der", "oid must be X500_UNIQUE_IDENTIFIER"),  # a TypeError
    ],
)
def test_a_csr_readable_only_in_part_is_refused_at_load(name: str, reason: str) -> None:
    """Found by the ``csr`` harness."""
    with pytest.raises(MalformedInput, match=f"not a certificate signing request.*{reason}"):
        load_csr((INPUTS / name).read_bytes())


def test_a_tpm_public_area_with_an_unknown_name_algorithm_is_malformed() -> None:
    """Found by the ``tpm`` harness: ``TPMT_PUBLIC.get_name()`` raised ValueError (in
    verify_certified_key, on a client's ``public_area``).
    """
    data = (INPUTS / "tpm-public-unknown-name-alg.bin").read_bytes()[1:]  # after the harness byte
    tss = import_tss("this test")
    public = unmarshal_tpm(tss.TPMT_PUBLIC, data, "public_area")
    with pytest.raises(MalformedInput, match="'public_area' has a name algorithm we do not know"):
        tpm_name(public, "public_area")
    twin = tss.TPMT_PUBLIC.parse("ecc256:ecdsa-sha256", objectAttributes="sign|fixedtpm")
    assert tpm_name(twin, "public_area")[:2] == b"\x00\x0b"  # nameAlg SHA-256


def test_a_csr_whose_key_cannot_be_read_is_inspected_and_refused() -> None:
    """Found by the ``csr`` harness: ``public_key()`` raised ValueError in describe_csr."""
    path = INPUTS / "csr-invalid-key.der"
    csr = load_csr(path.read_bytes())
    described = describe_csr(csr)
    assert described["public_key"].startswith("unreadable (")
    assert described["signature_valid"] is False
    assert _inspect(path)["public_key"] == described["public_key"]
    with pytest.raises(InvalidCSR):
        verify_csr(csr)


def test_a_readable_csr_still_describes_its_key(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = build_csr(x509.Name.from_rfc4514_string("CN=twin"), [], key)
    path = tmp_path / "twin.csr"
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    assert load_csr(path.read_bytes()).subject == csr.subject
    assert describe_csr(csr)["public_key"] == "ECDSA P-256"
    assert describe_csr(csr)["signature_valid"] is True
    assert _inspect(path)["public_key"] == "ECDSA P-256"


def test_an_ostiary_toml_that_is_not_utf8_is_a_bad_request(tmp_path: Path) -> None:
    """Found by the ``config_toml`` harness: ``read_text`` raised UnicodeDecodeError."""
    path = tmp_path / "ostiary.toml"
    path.write_bytes((INPUTS / "config-not-utf8.toml").read_bytes())
    with pytest.raises(BadRequest, match="not UTF-8 text"):
        load_config(path)
    path.write_text(dump_config(CAConfig(name="Twin")), encoding="utf-8")
    assert load_config(path).name == "Twin"


@pytest.mark.parametrize(
    "name",
    [
        "device-attest-apple-bad-subject.cbor",  # ValueError from the path verifier
        "device-attest-bad-version.cbor",  # x509.InvalidVersion from the x5c loader
    ],
)
def test_an_attestation_object_with_a_damaged_x5c_fails_the_challenge(name: str) -> None:
    """Found by the ``device_attest`` harness: the x5c certificates were loaded without
    reading them in full, and a bad subject or version escaped the validator.
    """
    context = ChallengeContext(
        challenge_type="device-attest-01",
        identifier_type="permanent-identifier",
        identifier_value="FUZZ0001",
        token="t" * 43,
        key_authorization="t.x",
        payload={"attObj": b64url((INPUTS / name).read_bytes())},
        policy={"attestation_roots": []},
    )
    with pytest.raises(ChallengeFailed, match="'x5c' holds a certificate that cannot be parsed"):
        verify_device_attestation(context, now=datetime.now(UTC))


def test_an_est_body_with_a_bad_csr_version_is_a_400() -> None:
    """Found by the ``est_csr`` harness: cryptography's InvalidVersion is no ValueError; the
    EST reader now loads through :func:`load_csr`, which refuses it as malformed input."""
    from ostiary.est import read_base64_csr

    with pytest.raises(MalformedInput, match="60 is not a valid CSR version"):
        read_base64_csr((INPUTS / "est-csr-bad-version.b64").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    csr = build_csr(x509.Name.from_rfc4514_string("CN=switch-1"), [], key)
    der = csr.public_bytes(serialization.Encoding.DER)
    assert read_base64_csr(base64.encodebytes(der)) == csr  # the twin: with line breaks


def test_a_webhook_subject_of_64_non_ascii_characters_is_refused_not_a_crash() -> None:
    """Found by the ``scep_webhook`` harness: a bare common name of at most 64 characters
    but 65 UTF-8 bytes passed our check and failed cryptography's (a ValueError)."""
    from ostiary.core.errors import InvalidName
    from ostiary.core.names import parse_subject
    from ostiary.provisioners.scep_webhook import read_verdict

    verdict = read_verdict((INPUTS / "scep-webhook-long-cn.json").read_bytes())
    with pytest.raises(InvalidName, match="at most 64 characters"):
        parse_subject(verdict.subject)
    assert parse_subject("a" * 64).rfc4514_string() == "CN=" + "a" * 64  # the twin


@pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive")
def test_a_certificate_with_a_negative_serial_gets_its_entra_binding() -> None:
    """Found by the ``certificate`` harness (issue 19's run): the Entra CBA
    ``X509:<I>...<SR>`` value called ``int.to_bytes`` on a negative serial (OverflowError).
    The octets are the serial's two's complement, as encoded; the positive twin unchanged.
    """
    certificate = load_certificate((INPUTS / "certificate-negative-serial-entra.der").read_bytes())
    assert certificate.serial_number < 0
    (issuer_serial, *_) = entra_certificate_user_ids(certificate)
    octets = bytes.fromhex(issuer_serial.rsplit("<SR>", 1)[1])[::-1]
    assert int.from_bytes(octets, "big", signed=True) == certificate.serial_number
    assert octets[0] >= 0x80  # minimal: no 0xFF sign octet in front
    twin = load_certificate((INPUTS / "certificate-negative-serial.der").read_bytes())
    assert describe_certificate(twin)["serial_number"].startswith("E7:1C")


def test_a_provisioner_config_with_an_endless_lifetime_is_a_bad_request() -> None:
    """Found by the ``jwk`` harness (issue 19's run): a duration past timedelta's range
    (``3444...440d``) raised OverflowError in parse_duration.
    """
    config = json.loads((INPUTS / "jwk-huge-duration.json").read_bytes())
    with pytest.raises(BadRequest, match="is too long"):
        parse_duration(config["claims"]["max_lifetime"])
    assert parse_duration("3650d").days == 3650  # a long one that fits


def _fuzz_roots() -> str:
    """The root the ``device_attest`` harness trusts (so the check reaches ``alg``)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fuzz"))
    from targets import ca  # type: ignore[import-not-found]

    root: str = ca()[1]
    return root


def test_an_attestation_statement_whose_alg_is_not_a_number_fails_the_challenge() -> None:
    """Found by the ``device_attest`` harness (issue 19's run): an ``alg`` that is a CBOR
    map was looked up in a dict (TypeError: unhashable type).
    """
    context = ChallengeContext(
        challenge_type="device-attest-01",
        identifier_type="permanent-identifier",
        identifier_value="FUZZ0001",
        token="t" * 43,
        key_authorization="t.x",
        payload={"attObj": b64url((INPUTS / "device-attest-alg-not-a-number.cbor").read_bytes())},
        policy={"attestation_roots": [_fuzz_roots()]},
    )
    with pytest.raises(ChallengeFailed, match="'alg' is neither ES256"):
        verify_device_attestation(context, now=datetime.now(UTC))


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        # UnsupportedAlgorithm from public_key() escaped the responder as a 500
        ("scep-unknown-signer-key.der", "Unknown key type"),
        # x509.InvalidVersion (not a ValueError) escaped read_envelope
        ("scep-bad-signer-version.der", "10 is not a valid X509 version"),
    ],
)
def test_a_scep_message_whose_signer_certificate_is_unreadable_is_not_a_pki_message(
    name: str, reason: str
) -> None:
    """Found by the ``scep`` harness: the signer's certificate was read lazily and parts
    cryptography cannot read raised later; it is now read in full by ``read_envelope``
    (a 400 "not a SCEP pkiMessage"). The twin, from the tests' SCEP client, opens.
    """
    with pytest.raises(ValueError, match=f"the signer's certificate: .*{reason}"):
        read_envelope((INPUTS / name).read_bytes())
    ra_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ra = self_signed(ra_key, "fuzz RA")
    device = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = make_csr(device, "device-1", None).public_bytes(serialization.Encoding.DER)
    twin = ScepRequest(device, self_signed(device, "device-1"), 19, csr, [ra]).der()
    opened = open_message(read_envelope(twin), ra_certificate=ra, ra_key=ra_key)
    assert opened.content == csr


def test_a_scep_message_with_an_unreadable_signed_attribute_is_not_a_pki_message() -> None:
    """Found by the ``scep`` harness (in .ci/run's 2 s): a signed attribute whose value
    asn1crypto decodes as a REAL, which has no ``native`` form: an AttributeError escaped
    ``read_envelope`` (a 500 on /scep). Now a ValueError, answered 400 "not a SCEP
    pkiMessage"; the well-formed twin is above (its attributes read).
    """
    with pytest.raises(ValueError, match=r"the SCEP attribute .* cannot be read"):
        read_envelope((INPUTS / "scep-attribute-real.der").read_bytes())


def test_an_ssh_key_with_a_compressed_point_is_malformed_input() -> None:
    """Found by the ``ssh_key`` harness: cryptography refuses a compressed EC point with
    ``NotImplementedError``, which escaped ``POST /ssh/.../sign`` as a 500.
    """
    line = (INPUTS / "ssh-compressed-point.pub").read_bytes()
    with pytest.raises(MalformedInput, match="not a valid ecdsa-sha2-nistp256 public key"):
        load_ssh_public_key_line(line)
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    twin = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    assert load_ssh_public_key_line(twin + b" fuzz@lab").key == key


def test_a_duration_past_timedeltas_range_is_a_bad_request() -> None:
    """Found by the ``jwk`` harness: a stored provisioner's ``max_lifetime`` of
    ``3011...1d`` raised OverflowError in ``parse_duration`` (the parser of every lifetime
    typed on the CLI or sent as ``not_after``); it is now a BadRequest. Twin: ``30d``.
    """
    config = json.loads((INPUTS / "jwk-huge-lifetime.json").read_text())
    with pytest.raises(BadRequest, match="is too long"):
        JWKProvisioner.from_config("fuzz", config)
    with pytest.raises(BadRequest, match="is too long"):
        parse_duration("9" * 30 + "y")
    assert parse_duration("30d") == timedelta(days=30)
