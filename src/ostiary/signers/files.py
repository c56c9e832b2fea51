"""CA keys in encrypted files: PKCS#8 ``ENCRYPTED PRIVATE KEY`` with a strong KDF.

The file is standard PKCS#8 (RFC 5958) with PBES2 (RFC 8018): PBKDF2-HMAC-SHA256 with
600,000 iterations (OWASP's 2023 figure for PBKDF2-SHA256) and AES-256-CBC, so that
``openssl pkey`` reads it as well. pyca/cryptography's own PKCS#8 encryption uses OpenSSL's
default of 2,048 iterations, too few for a CA key, so the envelope is assembled with
asn1crypto's PKCS#8 structures and cryptography's primitives. Files are written 0600,
atomically, and never overwritten.
"""

from __future__ import annotations

import base64
import os
import tempfile
import textwrap
from pathlib import Path

from asn1crypto import algos as asn1_algos
from asn1crypto import keys as asn1_keys
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
    PrivateKeyTypes,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from ostiary.core.errors import BadRequest, Conflict, MalformedInput, NotFound, WrongPassword

#: PBKDF2-HMAC-SHA256 iterations for key files.
KDF_ITERATIONS = 600_000
_ISSUER_KEY_TYPES = (
    ec.EllipticCurvePrivateKey,
    rsa.RSAPrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


def encrypt_private_key_pem(
    key: PrivateKeyTypes, password: bytes, *, iterations: int = KDF_ITERATIONS
) -> bytes:
    """``key`` as an ``ENCRYPTED PRIVATE KEY`` PEM block (PBES2, PBKDF2-SHA256, AES-256-CBC)."""
    if not password:
        raise BadRequest("a key file needs a non-empty password")
    plain = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    salt, iv = os.urandom(16), os.urandom(16)
    secret = PBKDF2HMAC(hashes.SHA256(), 32, salt, iterations).derive(password)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    encryptor = Cipher(algorithms.AES(secret), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    info = asn1_keys.EncryptedPrivateKeyInfo(
        {
            "encryption_algorithm": {
                "algorithm": "pbes2",
                "parameters": {
                    "key_derivation_func": {
                        "algorithm": "pbkdf2",
                        "parameters": {
                            "salt": asn1_algos.Pbkdf2Salt(name="specified", value=salt),
                            "iteration_count": iterations,
                            "key_length": 32,
                            "prf": {"algorithm": "sha256", "parameters": None},
                        },
                    },
                    "encryption_scheme": {"algorithm": "aes256_cbc", "parameters": iv},
                },
            },
            "encrypted_data": ciphertext,
        }
    )
    der: bytes = info.dump()
    return _pem(der)


def _pem(der: bytes) -> bytes:
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode("ascii"), 64))
    label = "ENCRYPTED PRIVATE KEY"
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n".encode()


def decrypt_private_key_pem(data: bytes, password: bytes | None) -> PrivateKeyTypes:
    """Load a PEM private key, encrypted or not; a wrong password is :class:`WrongPassword`."""
    try:
        return serialization.load_pem_private_key(data, password or None)
    except TypeError:
        if password:
            raise BadRequest("this key file is not encrypted, yet a password was given") from None
        raise WrongPassword("this key file is encrypted: a password is required") from None
    except ValueError as exc:
        if b"ENCRYPTED" in data and password:
            raise WrongPassword("wrong password for the key file") from None
        raise MalformedInput(f"not a private key: {exc}") from None


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file readable by the owner only (0600), atomically."""
    if path.exists():
        raise Conflict(f"{path} exists already: refusing to overwrite it", path=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)  # fails if path appeared meanwhile: never overwrite
    finally:
        os.unlink(tmp)


class FileSigner:
    """A CA key loaded from an encrypted PKCS#8 file into this process's memory."""

    def __init__(self, key: CertificateIssuerPrivateKeyTypes, label: str) -> None:
        self._key = key
        self.label = label

    @classmethod
    def load(cls, path: Path, password: bytes) -> FileSigner:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"key file {path} does not exist", path=str(path)) from None
        key = decrypt_private_key_pem(data, password)
        if not isinstance(key, _ISSUER_KEY_TYPES):
            raise MalformedInput(f"{path} holds a key type that cannot sign certificates")
        return cls(key, path.name)

    @classmethod
    def create(
        cls, path: Path, key: CertificateIssuerPrivateKeyTypes, password: bytes
    ) -> FileSigner:
        write_private_file(path, encrypt_private_key_pem(key, password))
        return cls(key, path.name)

    @property
    def private_key(self) -> CertificateIssuerPrivateKeyTypes:
        return self._key

    def public_key(self) -> CertificateIssuerPublicKeyTypes:
        return self._key.public_key()

    def close(self) -> None:
        """Nothing to release; the key object is dropped with the signer."""
