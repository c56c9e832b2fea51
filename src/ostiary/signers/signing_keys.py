"""Where remote-signing keys live: one protocol, encrypted files today, PKCS#11 later.

A :class:`SigningKeyStore` makes a key and hands back a *reference* (what the database
keeps) and loads a key object by that reference. The object is one of cryptography's
private-key types whose ``sign()`` does the work: for a file it is the ordinary key in this
process's memory; for a PKCS#11 token (:class:`Pkcs11SigningKeyStore`) it is the object
:mod:`ostiary.signers.pkcs11` returns, whose ``sign()`` calls the token, so the signing code
above never changes and the key never leaves the token.

:class:`FileSigningKeyStore` keeps each version as encrypted PKCS#8 (the same envelope as the
CA keys: PBKDF2-SHA256 600,000 iterations, AES-256-CBC, 0600) under
``<CA folder>/secrets/signing/<name>.v<version>.key``, sealed with the CA password so every
replica that can unlock the CA can sign. Loaded keys are cached per reference: the KDF is
deliberately slow and runs once per key version per process.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ostiary.core.errors import BadRequest, MalformedInput, NotFound, SignerUnavailable
from ostiary.core.jws import SigningPrivateKey
from ostiary.core.keys import KeyType
from ostiary.signers.files import decrypt_private_key_pem, encrypt_private_key_pem
from ostiary.signers.files import write_private_file as _write_private_file

if TYPE_CHECKING:  # python-pkcs11 is imported only when a token is used
    from ostiary.signers.pkcs11 import Pkcs11Token

#: Key types a signing key may have (the names the CLI uses).
SIGNING_KEY_TYPES = ("rsa-2048", "rsa-3072", "p256")


def generate_signing_key(key_type: str) -> SigningPrivateKey:
    """A fresh key of ``key_type`` (one of :data:`SIGNING_KEY_TYPES`)."""
    if key_type == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type in ("rsa-2048", "rsa-3072"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    raise BadRequest(
        f"key type {key_type!r} is not supported: use {', '.join(SIGNING_KEY_TYPES)}",
        key_type=key_type,
    )


class SigningKeyStore(Protocol):
    """Makes and opens remote-signing keys; private keys never leave it as bytes."""

    #: The backend name recorded with each key version (``file``, ``pkcs11``).
    backend: str

    def create(self, name: str, version: int, key_type: str) -> tuple[str, SigningPrivateKey]:
        """Make a key; return its reference and the key object (for its public half)."""
        ...

    def load(self, reference: str) -> SigningPrivateKey:
        """The key object a reference names."""
        ...

    def discard(self, reference: str) -> None:
        """Forget a key whose certificate was refused (best effort)."""
        ...


class FileSigningKeyStore:
    """Signing keys as encrypted PKCS#8 files in the CA folder, sealed with the CA password."""

    backend = "file"

    def __init__(self, ca_folder: Path, password: bytes) -> None:
        self._folder = ca_folder
        self._password = password
        self._cache: dict[str, SigningPrivateKey] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FileSigningKeyStore({str(self._folder)!r})"

    def create(self, name: str, version: int, key_type: str) -> tuple[str, SigningPrivateKey]:
        key = generate_signing_key(key_type)
        reference = f"secrets/signing/{name}.v{version}.key"
        _write_private_file(self._path(reference), encrypt_private_key_pem(key, self._password))
        with self._lock:
            self._cache[reference] = key
        return reference, key

    def load(self, reference: str) -> SigningPrivateKey:
        with self._lock:
            cached = self._cache.get(reference)
            if cached is not None:
                return cached
            path = self._path(reference)
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                raise NotFound(f"the signing key file {reference} is missing") from None
            key = decrypt_private_key_pem(data, self._password)
            if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
                raise MalformedInput(f"{reference} does not hold an RSA or EC key")
            self._cache[reference] = key
            return key

    def discard(self, reference: str) -> None:
        """Remove a key that never got its certificate (issuance was refused)."""
        with self._lock:
            self._cache.pop(reference, None)
            self._path(reference).unlink(missing_ok=True)

    def _path(self, reference: str) -> Path:
        relative = PurePosixPath(reference)
        if (
            relative.is_absolute()
            or ".." in relative.parts
            or relative.parts[:2]
            != (
                "secrets",
                "signing",
            )
        ):
            raise MalformedInput("a signing key reference must stay under secrets/signing/")
        return self._folder.joinpath(*relative.parts)


#: The token key types of the signing key types.
_TOKEN_KEY_TYPES = {"rsa-2048": KeyType.RSA2048, "rsa-3072": KeyType.RSA3072, "p256": KeyType.P256}
#: Prefix of references to keys in a PKCS#11 token (an RFC 7512 URI with the object label).
PKCS11_REFERENCE_PREFIX = "pkcs11:object="


class Pkcs11SigningKeyStore:
    """Signing keys generated in a PKCS#11 token (never extractable), labelled
    ``ostiary-signing-<name>-v<version>``; signing calls the token (:mod:`.pkcs11`).
    """

    backend = "pkcs11"

    def __init__(self, token: Pkcs11Token) -> None:
        self._token = token

    def create(self, name: str, version: int, key_type: str) -> tuple[str, SigningPrivateKey]:
        if key_type not in _TOKEN_KEY_TYPES:
            generate_signing_key(key_type)  # the readable refusal
        label = f"ostiary-signing-{name}-v{version}"
        signer = self._token.generate(label, _TOKEN_KEY_TYPES[key_type])
        return PKCS11_REFERENCE_PREFIX + label, signer.private_key

    def discard(self, reference: str) -> None:
        """Nothing: the token keeps the key pair (its label blocks a retry with that name and
        version; remove it with the token's tools).
        """

    def load(self, reference: str) -> SigningPrivateKey:
        if not reference.startswith(PKCS11_REFERENCE_PREFIX):
            raise MalformedInput("not a PKCS#11 signing key reference")
        return self._token.signer(reference.removeprefix(PKCS11_REFERENCE_PREFIX)).private_key


class SigningKeyStores:
    """Several stores by backend: new keys go to the ``default`` one, existing keys open in
    the store their reference names (so file keys keep working once a token is added).
    """

    def __init__(self, default: str, stores: Mapping[str, SigningKeyStore]) -> None:
        if default not in stores:
            raise BadRequest(
                f"signing keys cannot be made with kms {default!r} here: this CA offers "
                f"{', '.join(sorted(stores))} (PKCS#11 needs a CA whose keys are in a token)"
            )
        self.backend = default
        self._stores = dict(stores)

    def using(self, backend: str) -> SigningKeyStores:
        """The same stores, making new keys with ``backend`` (a rotation keeps its backend)."""
        return SigningKeyStores(backend, self._stores)

    def create(self, name: str, version: int, key_type: str) -> tuple[str, SigningPrivateKey]:
        return self._stores[self.backend].create(name, version, key_type)

    def discard(self, reference: str) -> None:
        self._stores[self.backend].discard(reference)

    def load(self, reference: str) -> SigningPrivateKey:
        backend = "pkcs11" if reference.startswith(PKCS11_REFERENCE_PREFIX) else "file"
        store = self._stores.get(backend)
        if store is None:
            raise SignerUnavailable(f"this server has no {backend} store for signing key files")
        return store.load(reference)


__all__ = [
    "PKCS11_REFERENCE_PREFIX",
    "SIGNING_KEY_TYPES",
    "FileSigningKeyStore",
    "Pkcs11SigningKeyStore",
    "SigningKeyStore",
    "SigningKeyStores",
    "generate_signing_key",
]
