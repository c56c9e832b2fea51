from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ostiary.core.errors import Conflict, WrongPassword
from ostiary.signers.base import Signer
from ostiary.signers.files import KDF_ITERATIONS, FileSigner, encrypt_private_key_pem

from ..conftest import require_tool


def test_key_file_is_0600_and_reloads(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "secrets" / "ca.key"
    signer = FileSigner.create(path, key, b"correct horse")
    assert isinstance(signer, Signer)
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = FileSigner.load(path, b"correct horse")
    assert loaded.public_key() == key.public_key()
    assert b"ENCRYPTED PRIVATE KEY" in path.read_bytes()


def test_wrong_password_is_refused_without_revealing_anything(tmp_path: Path) -> None:
    path = tmp_path / "ca.key"
    FileSigner.create(path, ed25519.Ed25519PrivateKey.generate(), b"right")
    with pytest.raises(WrongPassword) as info:
        FileSigner.load(path, b"wrong")
    assert "right" not in str(info.value) and "wrong" not in str(info.value).replace(
        "wrong password", ""
    )


def test_existing_key_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "ca.key"
    FileSigner.create(path, ec.generate_private_key(ec.SECP256R1()), b"pw")
    before = path.read_bytes()
    with pytest.raises(Conflict):
        FileSigner.create(path, ec.generate_private_key(ec.SECP256R1()), b"pw")
    assert path.read_bytes() == before


@pytest.mark.interop
def test_openssl_reads_the_key_file_and_sees_a_strong_kdf(tmp_path: Path) -> None:
    openssl = require_tool("openssl")
    path = tmp_path / "ca.key"
    path.write_bytes(encrypt_private_key_pem(ec.generate_private_key(ec.SECP384R1()), b"pw"))
    subprocess.run([openssl, "pkey", "-in", path, "-passin", "pass:pw", "-noout"], check=True)
    parsed = subprocess.run(
        [openssl, "asn1parse", "-in", path], check=True, capture_output=True, text=True
    ).stdout
    assert "PBES2" in parsed and "hmacWithSHA256" in parsed and "aes-256-cbc" in parsed
    assert f"{KDF_ITERATIONS:X}" in parsed
    bad = subprocess.run(
        [openssl, "pkey", "-in", path, "-passin", "pass:nope", "-noout"], capture_output=True
    )
    assert bad.returncode != 0
