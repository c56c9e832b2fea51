"""Small secrets sealed with the CA password: AES-256-GCM under a scrypt key.

A secret the server must read back (an ACME External Account Binding HMAC key verifies MACs,
so it cannot be kept as a hash) is stored in the database sealed with the CA password, the
one that opens the CA's key files (for a PKCS#11 CA, the sealing secret derived inside the
token, as provisioner keys are sealed). A copy of the database alone reveals nothing. The
name of the row (the EAB key id) is the associated data, so a sealed value moved to another
row does not open.

Format: ``1`` | salt (16) | nonce (12) | AES-256-GCM(secret), associated data as AAD. The
key derivation is the backup archive's (:mod:`ostiary.authority.backup`): scrypt with
2**15 x 8 x 128 bytes, 32 MiB of memory per guess.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ostiary.core.errors import BadRequest, MalformedInput

#: scrypt cost: 2**15 x 8 x 128 bytes = 32 MiB of memory per guess.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_VERSION = b"\x01"
_SALT, _NONCE = 16, 12


def derive_sealing_key(password: bytes, salt: bytes, *, length: int = 32) -> bytes:
    """The scrypt of ``password`` and ``salt``: ``length`` bytes of key material."""
    return Scrypt(salt=salt, length=length, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(password)


class Sealer:
    """Seals and opens small secrets with the CA password it holds (never shown)."""

    def __init__(self, password: bytes) -> None:
        if not password:
            raise BadRequest("sealing needs the CA password")
        self._password = password

    def __repr__(self) -> str:
        return "Sealer(<CA password>)"

    def seal(self, secret: bytes, *, associated: bytes) -> bytes:
        salt, nonce = os.urandom(_SALT), os.urandom(_NONCE)
        key = derive_sealing_key(self._password, salt)
        return _VERSION + salt + nonce + AESGCM(key).encrypt(nonce, secret, associated)

    def open(self, sealed: bytes, *, associated: bytes) -> bytes:
        """The secret; :class:`MalformedInput` if it was sealed otherwise or altered."""
        if not sealed.startswith(_VERSION) or len(sealed) < 1 + _SALT + _NONCE + 16:
            raise MalformedInput("a sealed secret in the database is damaged")
        salt = sealed[1 : 1 + _SALT]
        nonce = sealed[1 + _SALT : 1 + _SALT + _NONCE]
        key = derive_sealing_key(self._password, salt)
        try:
            return AESGCM(key).decrypt(nonce, sealed[1 + _SALT + _NONCE :], associated)
        except InvalidTag:
            raise MalformedInput(
                "a sealed secret does not open: another CA password, or an altered row"
            ) from None


__all__ = ["Sealer", "derive_sealing_key"]
