"""PKCS #12 files (RFC 7292): a certificate, its key and its chain, for devices to import.

Two encodings:

=========  ==================================================  ==============================
modern     PBES2: PBKDF2-HMAC-SHA256 (600 000 iterations) and  OpenSSL 3, current Windows,
           AES-256-CBC for key and certificates (RFC 8018);    macOS/iOS, Android, Java 11+,
           HMAC-SHA256 MAC                                     NSS
compat     pbeWithSHAAnd3-KeyTripleDES-CBC (RFC 7292 C) for    older Windows, macOS/iOS and
           key and certificates; HMAC-SHA1 MAC; 2048           Android; never RC2, which
           iterations, as OpenSSL has always written them      Android cannot read
=========  ==================================================  ==============================

With a password both are written by cryptography's ``PrivateFormat.PKCS12`` encryption
builder (its MAC always uses 2048 iterations).

No password (``password=None``) means the empty password, with a MAC, and the key in a
shrouded key bag encrypted under that empty password, the way ``openssl pkcs12 -export
-passout pass:`` writes it. cryptography refuses empty passwords, and its "no encryption"
file (a plain key bag) opens in OpenSSL and NSS, but Java's keytool finds no entry in it.
So that file is written here, from asn1crypto structures and cryptography primitives, with
the algorithms of the encoding asked for, 2048 iterations (an empty password protects
nothing) and the certificates unencrypted. OpenSSL (``-passin pass:``), keytool
(``-storepass ""``) and pk12util (``-W ""``) open all four variants; the tests prove it.
Apple devices have refused empty-password files in the past: give them a password.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Sequence
from typing import Literal

from asn1crypto import cms as asn1_cms
from asn1crypto import keys as asn1_keys
from asn1crypto import pkcs12 as asn1_pkcs12
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.serialization import pkcs12

from ostiary.core.errors import BadRequest, MalformedInput, WrongPassword

#: PBKDF2-HMAC-SHA256 iterations of the modern encoding (OWASP's 2023 figure for it).
MODERN_ITERATIONS = 600_000
#: Iterations of the compat encoding and of every MAC: what OpenSSL has always written.
COMPAT_ITERATIONS = 2048

_SALT_OCTETS = 16
_PKCS12_KEY_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,
)


def export_pkcs12(
    certificate: x509.Certificate,
    private_key: CertificateIssuerPrivateKeyTypes | pkcs12.PKCS12PrivateKeyTypes,
    *,
    ca_certificates: Iterable[x509.Certificate] = (),
    password: bytes | None,
    compat: bool = False,
    friendly_name: bytes | None = None,
    iterations: int | None = None,
) -> bytes:
    """A DER PKCS #12 file with ``certificate``, its ``private_key`` and ``ca_certificates``.

    ``password=None`` writes an empty-password file (see the module docstring); ``compat``
    picks the older encoding; ``iterations`` overrides the key-derivation work factor.
    :class:`BadRequest` when the key does not belong to the certificate, is of a type
    PKCS #12 readers do not know (ML-DSA), or the password is ``b""`` (say ``None``).
    """
    if not isinstance(private_key, _PKCS12_KEY_TYPES):
        raise BadRequest(f"a {type(private_key).__name__} cannot go into a PKCS #12 file")
    if private_key.public_key() != certificate.public_key():
        raise BadRequest("the private key does not belong to the certificate")
    if password == b"":
        raise BadRequest("an empty password is written as password=None")
    if friendly_name is not None and not _is_utf8(friendly_name):
        raise BadRequest("a PKCS #12 friendly name is UTF-8 text")
    # An empty password protects nothing, so its key derivation does not pretend to.
    strong = password is not None and not compat
    rounds = iterations or (MODERN_ITERATIONS if strong else COMPAT_ITERATIONS)
    if rounds < 1000:
        raise BadRequest("a PKCS #12 key derivation needs at least 1000 iterations")
    chain = list(ca_certificates)
    if password is None:
        return _export_empty_password(
            certificate, private_key, chain, compat=compat, name=friendly_name, rounds=rounds
        )
    builder = serialization.PrivateFormat.PKCS12.encryption_builder().kdf_rounds(rounds)
    if compat:
        builder = builder.key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        builder = builder.hmac_hash(hashes.SHA1())
    else:
        builder = builder.key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        builder = builder.hmac_hash(hashes.SHA256())
    return pkcs12.serialize_key_and_certificates(
        friendly_name, private_key, certificate, chain, builder.build(password)
    )


def load_pkcs12(data: bytes, password: bytes | None) -> pkcs12.PKCS12KeyAndCertificates:
    """Read a PKCS #12 file; ``None`` or ``b""`` for an empty-password file.

    :class:`~ostiary.core.errors.WrongPassword` when the file is a PKCS #12 file but the
    password does not open it; :class:`~ostiary.core.errors.MalformedInput` when it is not
    one at all.
    """
    try:
        return pkcs12.load_pkcs12(data, password or None)
    except ValueError:
        if not _is_pfx(data):
            raise MalformedInput("not a PKCS #12 file") from None
    raise WrongPassword("the password does not open this PKCS #12 file")


def _is_utf8(text: bytes) -> bool:
    try:
        text.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _is_pfx(data: bytes) -> bool:
    """Whether ``data`` has the shape of a PFX (RFC 7292 4), whatever its password."""
    try:
        pfx = asn1_pkcs12.Pfx.load(data, strict=True)
        return bool(pfx["version"].native == "v3" and pfx["auth_safe"]["content_type"].native)
    except (ValueError, TypeError, KeyError):
        return False


# -- the empty-password file -------------------------------------------------------------

_EMPTY_BMP_PASSWORD = b"\x00\x00"  # "" as a NUL-terminated BMPString (RFC 7292 B.1)


def _export_empty_password(
    certificate: x509.Certificate,
    private_key: pkcs12.PKCS12PrivateKeyTypes,
    chain: Sequence[x509.Certificate],
    *,
    compat: bool,
    name: bytes | None,
    rounds: int,
) -> bytes:
    certificate_der = certificate.public_bytes(serialization.Encoding.DER)
    # localKeyId pairs the key with its certificate; OpenSSL uses the certificate's SHA-1.
    attributes = _bag_attributes(hashlib.sha1(certificate_der).digest(), name)
    key_der = private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key_bag = asn1_pkcs12.SafeBag(
        {
            "bag_id": "pkcs8_shrouded_key_bag",
            "bag_value": _shroud(key_der, compat=compat, rounds=rounds),
            "bag_attributes": attributes,
        }
    )
    certificate_bags = [_certificate_bag(certificate_der, attributes)] + [
        _certificate_bag(c.public_bytes(serialization.Encoding.DER), None) for c in chain
    ]
    authenticated_safe = asn1_pkcs12.AuthenticatedSafe(
        [
            _data(asn1_pkcs12.SafeContents(certificate_bags)),
            _data(asn1_pkcs12.SafeContents([key_bag])),
        ]
    ).dump()
    digest: Literal["sha1", "sha256"] = "sha1" if compat else "sha256"
    salt = os.urandom(_SALT_OCTETS)
    mac_key = _pkcs12_kdf(digest, salt, 3, COMPAT_ITERATIONS, hashlib.new(digest).digest_size)
    pfx = asn1_pkcs12.Pfx(
        {
            "version": "v3",
            "auth_safe": {"content_type": "data", "content": authenticated_safe},
            "mac_data": {
                "mac": {
                    "digest_algorithm": {"algorithm": digest, "parameters": None},
                    "digest": hmac.new(mac_key, authenticated_safe, digest).digest(),
                },
                "mac_salt": salt,
                "iterations": COMPAT_ITERATIONS,
            },
        }
    )
    return bytes(pfx.dump())


def _shroud(key_der: bytes, *, compat: bool, rounds: int) -> asn1_keys.EncryptedPrivateKeyInfo:
    """EncryptedPrivateKeyInfo (RFC 5958 3) under the empty password."""
    salt = os.urandom(_SALT_OCTETS)
    if compat:
        # RFC 7292 appendix C: key and IV from the PKCS #12 KDF with SHA-1 (IDs 1 and 2).
        key = _pkcs12_kdf("sha1", salt, 1, rounds, 24)
        iv = _pkcs12_kdf("sha1", salt, 2, rounds, 8)
        encrypted = _cbc_encrypt(TripleDES(key), iv, key_der)
        algorithm: dict[str, object] = {
            "algorithm": "pkcs12_sha1_tripledes_3key",
            "parameters": {"salt": salt, "iterations": rounds},
        }
    else:
        # RFC 8018 6.2: PBES2, the password's octets ("" here) through PBKDF2.
        kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=rounds)
        iv = os.urandom(16)
        encrypted = _cbc_encrypt(algorithms.AES256(kdf.derive(b"")), iv, key_der)
        algorithm = {
            "algorithm": "pbes2",
            "parameters": {
                "key_derivation_func": {
                    "algorithm": "pbkdf2",
                    "parameters": {
                        "salt": {"specified": salt},
                        "iteration_count": rounds,
                        "prf": {"algorithm": "sha256"},
                    },
                },
                "encryption_scheme": {"algorithm": "aes256_cbc", "parameters": iv},
            },
        }
    return asn1_keys.EncryptedPrivateKeyInfo(
        {"encryption_algorithm": algorithm, "encrypted_data": encrypted}
    )


def _cbc_encrypt(cipher: TripleDES | algorithms.AES256, iv: bytes, data: bytes) -> bytes:
    padder = padding.PKCS7(cipher.block_size).padder()
    padded = padder.update(data) + padder.finalize()
    encryptor = Cipher(cipher, modes.CBC(iv)).encryptor()
    return encryptor.update(padded) + encryptor.finalize()


def _pkcs12_kdf(digest: str, salt: bytes, purpose: int, rounds: int, size: int) -> bytes:
    """RFC 7292 appendix B.2 for the empty password; ``purpose`` 1 key, 2 IV, 3 MAC key."""
    u = hashlib.new(digest).digest_size
    v = hashlib.new(digest).block_size
    diversifier = bytes((purpose,)) * v
    # I = S || P, each repeated to a whole number of v-octet blocks.
    blocks = bytearray(_fill(salt, v) + _fill(_EMPTY_BMP_PASSWORD, v))
    result = b""
    while len(result) < size:
        a = diversifier + bytes(blocks)
        for _ in range(rounds):
            a = hashlib.new(digest, a).digest()
        result += a
        b = int.from_bytes((a * (v // u + 1))[:v], "big")
        for start in range(0, len(blocks), v):
            block = (int.from_bytes(blocks[start : start + v], "big") + b + 1) % (1 << (8 * v))
            blocks[start : start + v] = block.to_bytes(v, "big")
    return result[:size]


def _fill(value: bytes, v: int) -> bytes:
    if not value:
        return b""
    length = v * ((len(value) + v - 1) // v)
    return (value * (length // len(value) + 1))[:length]


def _bag_attributes(local_key_id: bytes, name: bytes | None) -> asn1_pkcs12.Attributes:
    attributes = [{"type": "local_key_id", "values": [local_key_id]}]
    if name is not None:
        attributes.append({"type": "friendly_name", "values": [name.decode("utf-8")]})
    return asn1_pkcs12.Attributes(attributes)


def _certificate_bag(
    certificate_der: bytes, attributes: asn1_pkcs12.Attributes | None
) -> asn1_pkcs12.SafeBag:
    bag: dict[str, object] = {
        "bag_id": "cert_bag",
        "bag_value": asn1_pkcs12.CertBag(
            {"cert_id": "x509", "cert_value": asn1_x509.Certificate.load(certificate_der)}
        ),
    }
    if attributes is not None:
        bag["bag_attributes"] = attributes
    return asn1_pkcs12.SafeBag(bag)


def _data(contents: asn1_pkcs12.SafeContents) -> asn1_cms.ContentInfo:
    return asn1_cms.ContentInfo({"content_type": "data", "content": contents.dump()})
