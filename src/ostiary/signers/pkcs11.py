"""CA keys inside a PKCS#11 token (an HSM, SoftHSM2, a smart card): never copied out.

The token is reached through its vendor's PKCS#11 module (a shared library) with
python-pkcs11. Keys are generated *in* the token as token objects (``CKA_TOKEN``) that are
sensitive and not extractable (``CKA_SENSITIVE`` true, ``CKA_EXTRACTABLE`` false), so the token
itself marks them ``CKA_NEVER_EXTRACTABLE``. Ostiary only ever holds a handle.

:class:`Pkcs11Signer` hands out a private-key object that subclasses pyca/cryptography's
``EllipticCurvePrivateKey`` / ``RSAPrivateKey`` ABCs; cryptography's certificate and CRL
builders (and :mod:`ostiary.core.signing` for CRLs and OCSP) call its ``sign()``, which asks
the token:

- ECDSA: the data is hashed here and the digest signed with ``CKM_ECDSA`` (SoftHSM2 and many
  HSMs have no ``CKM_ECDSA_SHA256``); the token's raw ``r || s`` is DER-encoded
  (RFC 3279 ``ECDSA-Sig-Value``).
- RSA PKCS #1 v1.5: the ``DigestInfo`` is built here and signed with ``CKM_RSA_PKCS``.
- RSA-PSS: the digest is signed with ``CKM_RSA_PKCS_PSS`` (hash, MGF1 hash, salt length).

A PKCS#11 session is not safe to use from two threads at once: every call into the token
goes through one lock per :class:`Pkcs11Token` (the CA server signs from a thread pool).

Besides the two CA keys, the token holds one secret key (``CKK_GENERIC_SECRET``, also
non-extractable) used only through ``CKM_SHA256_HMAC`` to derive the *sealing secret*: the
password with which a token-backed CA seals provisioner keys in its database. Whoever has
the database but not the token (and its PIN) cannot open them; a short PIN is never the
only thing protecting a key file. See docs/hsm.md.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pkcs11
import pkcs11.exceptions as p11_errors
from asn1crypto import algos as asn1_algos
from asn1crypto import core as asn1_core
from asn1crypto import keys as asn1_keys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import (
    encode_dss_signature,
)
from pkcs11 import Attribute, Mechanism, ObjectClass
from pkcs11 import KeyType as P11KeyType
from pkcs11.mechanisms import MGF
from pkcs11.util.ec import encode_named_curve_parameters

from ostiary.core.errors import (
    BadRequest,
    Conflict,
    NotFound,
    OstiaryError,
    SignerUnavailable,
    WrongPassword,
)
from ostiary.core.held_keys import HeldECPrivateKey, digest_for_signing
from ostiary.core.keys import KeyType

#: Key types a token CA may use (EdDSA support in PKCS#11 modules is still rare).
TOKEN_KEY_TYPES = (KeyType.P256, KeyType.P384, KeyType.RSA2048, KeyType.RSA3072, KeyType.RSA4096)
_CURVES = {KeyType.P256: "secp256r1", KeyType.P384: "secp384r1"}
_RSA_BITS = {KeyType.RSA2048: 2048, KeyType.RSA3072: 3072, KeyType.RSA4096: 4096}
_CURVE_OBJECTS: dict[str, ec.EllipticCurve] = {
    "secp256r1": ec.SECP256R1(),
    "secp384r1": ec.SECP384R1(),
    "secp521r1": ec.SECP521R1(),
}
_HASH_MECHANISMS = {
    "sha256": (Mechanism.SHA256, MGF.SHA256),
    "sha384": (Mechanism.SHA384, MGF.SHA384),
    "sha512": (Mechanism.SHA512, MGF.SHA512),
}
_SEALING_INPUT = b"ostiary provisioner sealing secret v1"

#: Attributes of every private key Ostiary makes in a token.
PRIVATE_TEMPLATE: dict[Attribute, Any] = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.SIGN: True,
    Attribute.DECRYPT: False,
    Attribute.UNWRAP: False,
    Attribute.DERIVE: False,
}
_PUBLIC_TEMPLATE: dict[Attribute, Any] = {
    Attribute.TOKEN: True,
    Attribute.VERIFY: True,
    Attribute.ENCRYPT: False,
    Attribute.WRAP: False,
}


def _token_error(exc: Exception, what: str) -> OstiaryError:
    """One clear line for a PKCS#11 failure (the library's own message is often empty)."""
    name = type(exc).__name__
    if isinstance(exc, p11_errors.PinIncorrect | p11_errors.PinInvalid | p11_errors.PinLenRange):
        return WrongPassword(f"{what}: wrong PIN for the token")
    if isinstance(exc, p11_errors.PinLocked):
        return SignerUnavailable(f"{what}: the token's user PIN is locked")
    if isinstance(exc, p11_errors.PinExpired):
        return SignerUnavailable(f"{what}: the token's user PIN has expired")
    if isinstance(
        exc,
        p11_errors.TokenNotPresent
        | p11_errors.TokenNotRecognised
        | p11_errors.DeviceRemoved
        | p11_errors.DeviceError
        | p11_errors.SessionClosed
        | p11_errors.SessionHandleInvalid,
    ):
        return SignerUnavailable(f"{what}: the token is not available ({name})")
    return SignerUnavailable(f"{what}: the token refused ({name})")


@dataclass(frozen=True)
class Pkcs11Location:
    """Where a token CA's keys are: the module, the token, the key labels (never secret)."""

    module: Path
    token: str


class Pkcs11Token:
    """One logged-in session on one token, shared by its signers behind a lock."""

    def __init__(self, session: Any, location: Pkcs11Location) -> None:
        self._session = session
        self._lock = threading.Lock()
        self._closed = False
        self.location = location

    @classmethod
    def open(cls, module: Path, token_label: str, pin: bytes) -> Pkcs11Token:
        """Load ``module``, find the token labelled ``token_label`` and log in with ``pin``."""
        what = f"PKCS#11 token {token_label!r}"
        if not module.is_file():
            raise SignerUnavailable(f"PKCS#11 module {module} does not exist")
        try:
            lib = pkcs11.lib(str(module))
        except (RuntimeError, OSError) as exc:
            raise SignerUnavailable(
                f"PKCS#11 module {module} cannot be loaded ({type(exc).__name__})"
            ) from None
        try:
            token = lib.get_token(token_label=token_label)
        except p11_errors.NoSuchToken:
            raise SignerUnavailable(f"{what} is not present in {module.name}") from None
        except p11_errors.MultipleTokensReturned:
            raise SignerUnavailable(f"several tokens are labelled {token_label!r}") from None
        except p11_errors.PKCS11Error as exc:
            raise _token_error(exc, what) from None
        try:
            pin_text = pin.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("the token PIN must be UTF-8 text") from None
        try:
            session = token.open(user_pin=pin_text, rw=True)
        except p11_errors.PKCS11Error as exc:
            raise _token_error(exc, what) from None
        return cls(session, Pkcs11Location(module, token_label))

    # ------------------------------------------------------------------ keys

    def generate(self, label: str, key_type: KeyType) -> Pkcs11Signer:
        """A new, never-extractable key pair labelled ``label`` in the token."""
        if key_type not in TOKEN_KEY_TYPES:
            allowed = ", ".join(k.value for k in TOKEN_KEY_TYPES)
            raise BadRequest(f"key type {key_type.value} cannot be made in a token: use {allowed}")
        with self._lock:
            self._check_open()
            if self._find(label, ObjectClass.PRIVATE_KEY) is not None:
                raise Conflict(f"the token holds a key labelled {label!r} already")
            try:
                if key_type in _CURVES:
                    params = self._session.create_domain_parameters(
                        P11KeyType.EC,
                        {Attribute.EC_PARAMS: encode_named_curve_parameters(_CURVES[key_type])},
                        local=True,
                    )
                    params.generate_keypair(
                        store=True,
                        label=label,
                        public_template=_PUBLIC_TEMPLATE,
                        private_template=PRIVATE_TEMPLATE,
                    )
                else:
                    self._session.generate_keypair(
                        P11KeyType.RSA,
                        _RSA_BITS[key_type],
                        store=True,
                        label=label,
                        public_template=_PUBLIC_TEMPLATE,
                        private_template=PRIVATE_TEMPLATE,
                    )
            except p11_errors.PKCS11Error as exc:
                raise _token_error(exc, f"generating {label!r}") from None
        return self.signer(label)

    def signer(self, label: str, *, owns_token: bool = False) -> Pkcs11Signer:
        """The key pair labelled ``label`` (:class:`NotFound` if the token has none).

        With ``owns_token`` the signer's ``close()`` closes this session too.
        """
        with self._lock:
            self._check_open()
            private = self._find(label, ObjectClass.PRIVATE_KEY)
            public = self._find(label, ObjectClass.PUBLIC_KEY)
            if private is None or public is None:
                raise NotFound(
                    f"token {self.location.token!r} holds no key pair labelled {label!r}"
                )
            try:
                public_key = _public_key_of(public)
            except p11_errors.PKCS11Error as exc:
                raise _token_error(exc, f"reading {label!r}") from None
        return Pkcs11Signer(self, private, public_key, label, owns_token=owns_token)

    def has_object(self, label: str) -> bool:
        """Whether the token holds any object (key or certificate) labelled ``label``."""
        with self._lock:
            self._check_open()
            try:
                return bool(list(self._session.get_objects({Attribute.LABEL: label})))
            except p11_errors.PKCS11Error as exc:
                raise _token_error(exc, f"looking up {label!r}") from None

    def key_attributes(self, label: str) -> dict[str, bool]:
        """The protection flags of the private key ``label``, as the token reports them."""
        with self._lock:
            self._check_open()
            private = self._find(label, ObjectClass.PRIVATE_KEY)
            if private is None:
                raise NotFound(f"token {self.location.token!r} holds no key labelled {label!r}")
            return _flags(private)

    def sealing_secret(self, label: str, *, create: bool = False) -> bytes:
        """A secret derived inside the token (HMAC-SHA256 with the non-extractable ``label``)."""
        with self._lock:
            self._check_open()
            key = self._find(label, ObjectClass.SECRET_KEY)
            try:
                if key is None:
                    if not create:
                        raise NotFound(
                            f"token {self.location.token!r} holds no sealing key {label!r}"
                        )
                    key = self._session.generate_key(
                        P11KeyType.GENERIC_SECRET,
                        256,
                        label=label,
                        store=True,
                        template={
                            Attribute.TOKEN: True,
                            Attribute.PRIVATE: True,
                            Attribute.SENSITIVE: True,
                            Attribute.EXTRACTABLE: False,
                            Attribute.SIGN: True,
                            Attribute.VERIFY: True,
                            Attribute.ENCRYPT: False,
                            Attribute.DECRYPT: False,
                            Attribute.WRAP: False,
                            Attribute.UNWRAP: False,
                            Attribute.DERIVE: False,
                        },
                    )
                mac: bytes = key.sign(_SEALING_INPUT, mechanism=Mechanism.SHA256_HMAC)
            except p11_errors.PKCS11Error as exc:
                raise _token_error(exc, f"using sealing key {label!r}") from None
        return mac.hex().encode("ascii")

    def sign_raw(self, key: Any, data: bytes, mechanism: Mechanism, param: Any = None) -> bytes:
        """One C_Sign with ``mechanism``, serialized with every other call on this session."""
        with self._lock:
            self._check_open()
            try:
                result: bytes = key.sign(data, mechanism=mechanism, mechanism_param=param)
            except p11_errors.PKCS11Error as exc:
                raise _token_error(exc, f"signing with token {self.location.token!r}") from None
        return result

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._session.close()
            except p11_errors.PKCS11Error:  # pragma: no cover - token gone already
                pass

    def _check_open(self) -> None:
        if self._closed:
            raise SignerUnavailable(f"the session on token {self.location.token!r} is closed")

    def _find(self, label: str, kind: ObjectClass) -> Any:
        try:
            found = list(self._session.get_objects({Attribute.LABEL: label, Attribute.CLASS: kind}))
        except p11_errors.PKCS11Error as exc:
            raise _token_error(exc, f"looking up {label!r}") from None
        if len(found) > 1:
            raise Conflict(
                f"token {self.location.token!r} holds several objects labelled {label!r}"
            )
        return found[0] if found else None


def _flags(private: Any) -> dict[str, bool]:
    return {
        "sensitive": bool(private[Attribute.SENSITIVE]),
        "extractable": bool(private[Attribute.EXTRACTABLE]),
        "never_extractable": bool(private[Attribute.NEVER_EXTRACTABLE]),
        "always_sensitive": bool(private[Attribute.ALWAYS_SENSITIVE]),
        "token": bool(private[Attribute.TOKEN]),
        "local": bool(private[Attribute.LOCAL]),
    }


def _public_key_of(public: Any) -> CertificateIssuerPublicKeyTypes:
    if public.key_type == P11KeyType.EC:
        params = asn1_keys.ECDomainParameters.load(public[Attribute.EC_PARAMS])
        if params.name != "named":
            raise SignerUnavailable("the token key uses explicit curve parameters")
        curve_name = params.chosen.native
        curve = _CURVE_OBJECTS.get(curve_name)
        if curve is None:
            raise SignerUnavailable(f"the token key uses an unsupported curve {curve_name}")
        point = asn1_core.OctetString.load(public[Attribute.EC_POINT]).native
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
    if public.key_type == P11KeyType.RSA:
        modulus = int.from_bytes(public[Attribute.MODULUS], "big")
        exponent = int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big")
        return rsa.RSAPublicNumbers(exponent, modulus).public_key()
    raise SignerUnavailable(f"the token key has an unsupported type {public.key_type!r}")


def _not_exportable() -> NoReturn:
    raise TypeError("this key lives in a PKCS#11 token and cannot be exported")


class Pkcs11ECPrivateKey(HeldECPrivateKey):
    """An EC key in a token, behind cryptography's private-key interface."""

    held_in = "a PKCS#11 token"

    def __init__(self, token: Pkcs11Token, handle: Any, public: ec.EllipticCurvePublicKey):
        super().__init__(public)
        self._token = token
        self._handle = handle

    def sign(
        self,
        data: bytes | bytearray | memoryview,
        signature_algorithm: ec.EllipticCurveSignatureAlgorithm,
    ) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise TypeError("only ECDSA signatures are supported")
        digest, _ = digest_for_signing(bytes(data), signature_algorithm.algorithm)
        raw = self._token.sign_raw(self._handle, digest, Mechanism.ECDSA)
        half = len(raw) // 2
        return encode_dss_signature(
            int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        )


class Pkcs11RSAPrivateKey(rsa.RSAPrivateKey):
    """An RSA key in a token, behind cryptography's private-key interface."""

    def __init__(self, token: Pkcs11Token, handle: Any, public: rsa.RSAPublicKey):
        self._token = token
        self._handle = handle
        self._public = public

    def sign(
        self,
        data: bytes | bytearray | memoryview,
        padding: asym_padding.AsymmetricPadding,
        algorithm: Any,
    ) -> bytes:
        digest, hash_algorithm = digest_for_signing(bytes(data), algorithm)
        if isinstance(padding, asym_padding.PKCS1v15):
            info = asn1_algos.DigestInfo(
                {
                    "digest_algorithm": {
                        "algorithm": hash_algorithm.name,
                        "parameters": asn1_core.Null(),  # RFC 8017 9.2: NULL present
                    },
                    "digest": digest,
                }
            ).dump()
            return self._token.sign_raw(self._handle, info, Mechanism.RSA_PKCS)
        if isinstance(padding, asym_padding.PSS):
            mechanisms = _HASH_MECHANISMS.get(hash_algorithm.name)
            mgf = padding._mgf
            if mechanisms is None or not isinstance(mgf, asym_padding.MGF1):
                raise TypeError("RSA-PSS needs SHA-256/384/512 and MGF1")
            mgf_mechanisms = _HASH_MECHANISMS.get(mgf._algorithm.name)
            if mgf_mechanisms is None:
                raise TypeError("RSA-PSS needs MGF1 with SHA-256/384/512")
            salt = self._salt_length(padding, hash_algorithm)
            param = (mechanisms[0], mgf_mechanisms[1], salt)
            return self._token.sign_raw(self._handle, digest, Mechanism.RSA_PKCS_PSS, param)
        raise TypeError("only PKCS #1 v1.5 and PSS padding are supported")

    def _salt_length(self, padding: asym_padding.PSS, algorithm: hashes.HashAlgorithm) -> int:
        salt = padding._salt_length
        if isinstance(salt, int):
            return salt
        if isinstance(salt, asym_padding._DigestLength):
            return algorithm.digest_size
        if isinstance(salt, asym_padding._MaxLength | asym_padding._Auto):
            return (self.key_size + 6) // 8 - algorithm.digest_size - 2
        raise TypeError("unsupported PSS salt length")

    def decrypt(self, ciphertext: bytes, padding: asym_padding.AsymmetricPadding) -> bytes:
        raise TypeError("a CA key in a token only signs")

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        _not_exportable()

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        _not_exportable()

    def __copy__(self) -> Pkcs11RSAPrivateKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Pkcs11RSAPrivateKey:
        return self


class Pkcs11Signer:
    """A CA key pair in a token: the :class:`~ostiary.signers.base.Signer` for a pkcs11 CA."""

    def __init__(
        self,
        token: Pkcs11Token,
        handle: Any,
        public: CertificateIssuerPublicKeyTypes,
        label: str,
        *,
        owns_token: bool = False,
    ) -> None:
        self.token = token
        self._owns_token = owns_token
        self.label = label
        self._public = public
        self._key: Pkcs11ECPrivateKey | Pkcs11RSAPrivateKey
        if isinstance(public, ec.EllipticCurvePublicKey):
            self._key = Pkcs11ECPrivateKey(token, handle, public)
        elif isinstance(public, rsa.RSAPublicKey):
            self._key = Pkcs11RSAPrivateKey(token, handle, public)
        else:  # pragma: no cover - _public_key_of only returns these
            raise SignerUnavailable(f"token key {label!r} has an unsupported type")

    @property
    def private_key(self) -> Pkcs11ECPrivateKey | Pkcs11RSAPrivateKey:
        return self._key

    def public_key(self) -> CertificateIssuerPublicKeyTypes:
        return self._public

    def close(self) -> None:
        """Close the token session if this signer owns it (else the owner closes it)."""
        if self._owns_token:
            self.token.close()


__all__ = [
    "PRIVATE_TEMPLATE",
    "TOKEN_KEY_TYPES",
    "Pkcs11ECPrivateKey",
    "Pkcs11Location",
    "Pkcs11RSAPrivateKey",
    "Pkcs11Signer",
    "Pkcs11Token",
]
