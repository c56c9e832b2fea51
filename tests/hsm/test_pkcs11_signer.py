"""The PKCS#11 signer against SoftHSM2: keys made in the token, signatures made there."""

from __future__ import annotations

import subprocess
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from pkcs11 import Mechanism

from ostiary.core.errors import Conflict, NotFound, SignerUnavailable, WrongPassword
from ostiary.core.keys import KeyType
from ostiary.core.signing import sign_data
from ostiary.signers.base import Signer
from ostiary.signers.pkcs11 import Pkcs11Signer, Pkcs11Token
from tests.conftest import require_tool
from tests.hsm.conftest import PIN, SoftHSM

NOW = datetime.now(UTC).replace(microsecond=0)


def _self_signed(
    signer: Pkcs11Signer, digest: hashes.HashAlgorithm, **kw: object
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, signer.label)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(signer.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(minutes=1))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
    )
    return builder.sign(signer.private_key, digest, **kw)  # type: ignore[arg-type]


def _openssl_check_ss_sig(certificate: x509.Certificate, folder: Path) -> None:
    openssl = require_tool("openssl")
    path = folder / "self.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    done = subprocess.run(
        [openssl, "verify", "-check_ss_sig", "-CAfile", path, path],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and ": OK" in done.stdout, done.stdout + done.stderr


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every C_Sign (the real call still happens): proof that the token signed."""
    calls: list[str] = []
    real = Pkcs11Token.sign_raw

    def spy(
        self: Pkcs11Token, key: object, data: bytes, mechanism: object, param: object = None
    ) -> bytes:
        calls.append(Mechanism(int(mechanism)).name)  # type: ignore[call-overload]
        return real(self, key, data, mechanism, param)  # type: ignore[arg-type]

    monkeypatch.setattr(Pkcs11Token, "sign_raw", spy)
    return calls


def test_ec_key_is_made_in_the_token_and_signs_through_cryptographys_builders(
    softhsm: SoftHSM, tmp_path: Path, counted: list[str]
) -> None:
    token = Pkcs11Token.open(softhsm.module, "signer-ec", PIN.encode())
    try:
        signer = token.generate("ca", KeyType.P256)
        assert isinstance(signer, Signer)
        assert isinstance(signer.private_key, ec.EllipticCurvePrivateKey)
        certificate = _self_signed(signer, hashes.SHA256())
        # cryptography's Rust builder called our Python sign(), which called C_Sign.
        assert counted == ["ECDSA"]
        certificate.verify_directly_issued_by(certificate)
        _openssl_check_ss_sig(certificate, tmp_path)
        crl = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(certificate.subject)
            .last_update(NOW)
            .next_update(NOW + timedelta(hours=1))
            .sign(signer.private_key, hashes.SHA256())
        )
        assert crl.is_signature_valid(signer.public_key())
        # Our own DER signing (CRLs, OCSP) goes through the same sign().
        signature = sign_data(signer.private_key, b"to be signed")
        public = signer.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        public.verify(signature, b"to be signed", ec.ECDSA(hashes.SHA256()))
        with pytest.raises(InvalidSignature):
            public.verify(signature, b"to be signed, changed", ec.ECDSA(hashes.SHA256()))
        assert len(counted) == 3
    finally:
        token.close()


def test_the_key_reports_never_extractable_and_cannot_be_exported(softhsm: SoftHSM) -> None:
    token = Pkcs11Token.open(softhsm.module, "signer-ec", PIN.encode())
    try:
        token.generate("kept", KeyType.P256)  # its own key: the test runs alone as well
        signer = token.signer("kept")
        flags = token.key_attributes("kept")
        assert flags == {
            "sensitive": True,
            "extractable": False,
            "never_extractable": True,
            "always_sensitive": True,
            "token": True,
            "local": True,
        }
        with pytest.raises(TypeError, match="cannot be exported"):
            signer.private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        with pytest.raises(TypeError, match="cannot be exported"):
            signer.private_key.private_numbers()
        with pytest.raises(Conflict, match="already"):
            token.generate("kept", KeyType.P256)
    finally:
        token.close()


def test_p384_signs_with_sha384(softhsm: SoftHSM, tmp_path: Path) -> None:
    token = Pkcs11Token.open(softhsm.module, "signer-p384", PIN.encode())
    try:
        signer = token.generate("ca", KeyType.P384)
        certificate = _self_signed(signer, hashes.SHA384())
        assert certificate.signature_hash_algorithm is not None
        assert certificate.signature_hash_algorithm.name == "sha384"
        _openssl_check_ss_sig(certificate, tmp_path)
    finally:
        token.close()


def test_rsa_pkcs1v15_and_pss(softhsm: SoftHSM, tmp_path: Path, counted: list[str]) -> None:
    token = Pkcs11Token.open(softhsm.module, "signer-rsa", PIN.encode())
    try:
        signer = token.generate("ca", KeyType.RSA2048)
        assert isinstance(signer.private_key, rsa.RSAPrivateKey)
        assert signer.private_key.key_size == 2048
        v15 = _self_signed(signer, hashes.SHA256())
        _openssl_check_ss_sig(v15, tmp_path)
        pss = _self_signed(
            signer,
            hashes.SHA256(),
            rsa_padding=padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH),
        )
        assert pss.signature_algorithm_oid.dotted_string == "1.2.840.113549.1.1.10"
        _openssl_check_ss_sig(pss, tmp_path)
        assert counted == ["RSA_PKCS", "RSA_PKCS_PSS"]
        public = signer.public_key()
        assert isinstance(public, rsa.RSAPublicKey)
        for salt in (padding.PSS.MAX_LENGTH, 20):
            scheme = padding.PSS(padding.MGF1(hashes.SHA384()), salt)
            signature = signer.private_key.sign(b"data", scheme, hashes.SHA384())
            public.verify(signature, b"data", scheme, hashes.SHA384())
        with pytest.raises(InvalidSignature):
            public.verify(signature, b"other", scheme, hashes.SHA384())
        with pytest.raises(TypeError):
            signer.private_key.sign(
                b"data",
                padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None),
                hashes.SHA256(),
            )
    finally:
        token.close()


def test_one_session_is_shared_safely_by_threads(softhsm: SoftHSM) -> None:
    token = Pkcs11Token.open(softhsm.module, "signer-threads", PIN.encode())
    try:
        signer = token.generate("ca", KeyType.P256)
        key, public = signer.private_key, signer.public_key()
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert isinstance(public, ec.EllipticCurvePublicKey)
        failures: list[BaseException] = []

        def work(n: int) -> None:
            try:
                for i in range(25):
                    data = f"{n}-{i}".encode()
                    signature = key.sign(data, ec.ECDSA(hashes.SHA256()))
                    public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
    finally:
        token.close()
    with pytest.raises(SignerUnavailable, match="closed"):
        key.sign(b"x", ec.ECDSA(hashes.SHA256()))


def test_refusals_are_one_clear_error(softhsm: SoftHSM, tmp_path: Path) -> None:
    with pytest.raises(WrongPassword, match="wrong PIN") as wrong:
        Pkcs11Token.open(softhsm.module, "signer-refusals", b"999999")
    assert "999999" not in str(wrong.value)
    with pytest.raises(SignerUnavailable, match="not present"):
        Pkcs11Token.open(softhsm.module, "no-such-token", PIN.encode())
    with pytest.raises(SignerUnavailable, match="does not exist"):
        Pkcs11Token.open(tmp_path / "missing.so", "signer-refusals", PIN.encode())
    not_a_module = tmp_path / "garbage.so"
    not_a_module.write_bytes(b"not a shared library")
    with pytest.raises(SignerUnavailable, match="cannot be loaded"):
        Pkcs11Token.open(not_a_module, "signer-refusals", PIN.encode())
    token = Pkcs11Token.open(softhsm.module, "signer-refusals", PIN.encode())
    try:
        with pytest.raises(NotFound, match="no key pair labelled 'absent'"):
            token.signer("absent")
        with pytest.raises(NotFound, match="no sealing key"):
            token.sealing_secret("absent")
        first = token.sealing_secret("seal", create=True)
        assert first == token.sealing_secret("seal")
        assert len(first) == 64
        with pytest.raises(NotFound):
            token.key_attributes("seal")
    finally:
        token.close()
