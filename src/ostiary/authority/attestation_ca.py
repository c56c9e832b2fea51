"""An open TPM attestation CA: attestation keys (AKs) certified against the TPM's EK.

A device proves that its AK lives in a genuine TPM in two round trips (TCG "credential
activation", TPM 2.0 Library Part 1 section 24, Part 3 sections 12.5-12.6):

1. ``challenge``: the device sends its endorsement key (EK) certificate chain, the EK's
   public area and the AK's public area. We check that the EK certificate chains to one of
   the manufacturers' roots in ``<CA folder>/tpm-ek-roots.pem``, that the EK public area holds
   the certified key and is a restricted decryption key bound to the TPM, and that the AK is
   a restricted signing key bound to the TPM. Then MakeCredential, in software: a fresh
   secret encrypted to the EK and bound to the AK's name. Only the TPM holding that EK can
   decrypt it, and only while the AK (by name) is loaded in it (ActivateCredential).
2. ``certify``: the device sends the same three structures and the decrypted secret. The
   secret is never stored: the database keeps, as a single-use attestation nonce,
   ``SHA-256(secret || AK name || EK key hash)``, so an answer counts only for the AK and EK
   it was made for, once, within five minutes.

The AK certificate is issued by the CA's issuing key through the ``attestation-key``
profile: EKU tcg-kp-AIKCertificate (2.23.133.8.3), the TPM's manufacturer, model and
firmware version (from the EK certificate's SAN, TCG EK Credential Profile section 3.2.9) as
a directoryName SAN, a ``urn:ek:sha256:HEX`` URI and the permanentIdentifier ``HEX`` (the
SHA-256 of the EK's SubjectPublicKeyInfo), and that same hex as the common name. Nothing in
it is chosen by the requester. ``attest`` provisioners that list this CA's root accept it.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ostiary._tss import import_tss
from ostiary.core.encoding import decode_base64_field, load_certificate_chain
from ostiary.core.errors import Conflict, MalformedInput, NotFound, PolicyDenied, Unauthorized
from ostiary.core.issuance import Authorization
from ostiary.core.lifetime import Lifetime
from ostiary.core.names import permanent_identifier_name
from ostiary.store import AttestationNonceRepository

if TYPE_CHECKING:
    from ostiary.authority.authority import Authority

#: The file of the CA folder that lists the TPM manufacturers' EK roots (PEM).
EK_ROOTS_FILE = "tpm-ek-roots.pem"
#: How long a challenge may be answered.
CHALLENGE_TTL = timedelta(minutes=5)
#: How long an AK certificate is valid (a device re-enrolls its AK after that).
AK_LIFETIME = Lifetime(
    minimum=timedelta(days=1), default=timedelta(days=365), maximum=timedelta(days=365)
)
MAX_EK_CHAIN = 4
_MAX_STRUCTURE = 4096
#: TCG attribute OIDs of the EK certificate's directoryName SAN.
TPM_MANUFACTURER = x509.ObjectIdentifier("2.23.133.2.1")
TPM_MODEL = x509.ObjectIdentifier("2.23.133.2.2")
TPM_VERSION = x509.ObjectIdentifier("2.23.133.2.3")
_TPM_ATTRIBUTES = (TPM_MANUFACTURER, TPM_MODEL, TPM_VERSION)


def _tss() -> Any:
    return import_tss("the TPM attestation CA")


@dataclass(frozen=True)
class AKEnrollment:
    """What a device sends in both round trips: its EK chain, EK and AK public areas."""

    ek_chain: tuple[x509.Certificate, ...]
    ek_public: bytes
    ak_public: bytes

    @classmethod
    def from_base64(cls, ek_chain: Sequence[str], ek_public: str, ak_public: str) -> AKEnrollment:
        if not 1 <= len(ek_chain) <= MAX_EK_CHAIN:
            raise MalformedInput(f"'ek_chain' must list 1 to {MAX_EK_CHAIN} certificates")
        chain: list[x509.Certificate] = []
        for entry in ek_chain:
            chain.extend(load_certificate_chain(_b64(entry, "ek_chain")))
        return cls(tuple(chain), _b64(ek_public, "ek_public"), _b64(ak_public, "ak_public"))

    @staticmethod
    def secret_from_base64(value: str) -> bytes:
        """The secret ActivateCredential released, as the device sends it."""
        return _b64(value, "secret")


@dataclass(frozen=True)
class AKChallenge:
    """MakeCredential's output, marshalled (TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET)."""

    credential_blob: bytes
    encrypted_secret: bytes
    expires_at: datetime


def _b64(value: object, name: str) -> bytes:
    return decode_base64_field(value, f"{name!r}", max_length=_MAX_STRUCTURE * 2)


def load_ek_roots(folder: Path) -> list[x509.Certificate]:
    """The manufacturers' EK roots of the CA folder; :class:`NotFound` if none are set up."""
    path = folder / EK_ROOTS_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(
            "this CA certifies no attestation keys: it has no TPM EK roots "
            f"({EK_ROOTS_FILE} in its folder; see docs/tpm.md)"
        ) from None
    return load_certificate_chain(data)


def _unmarshal_public(data: bytes, name: str) -> Any:
    tss = _tss()
    try:
        value, used = tss.TPMT_PUBLIC.unmarshal(data)
    except (tss.TSS2_Exception, ValueError, TypeError):
        raise MalformedInput(f"{name!r} is not a TPMT_PUBLIC") from None
    if used != len(data):
        raise MalformedInput(f"{name!r} has trailing bytes")
    return value


def _name_of(public: Any, name: str) -> bytes:
    """The TPM name (``nameAlg || H(public)``) of a public area a client sent."""
    try:
        return bytes(public.get_name())
    except ValueError:  # tpm2-pytss knows no such nameAlg
        raise MalformedInput(f"{name!r} has a name algorithm we do not know") from None


def _spki(key: Any) -> bytes:
    data: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


def _public_key_of(tss: Any, public: Any, what: str) -> Any:
    if int(public.type) == int(tss.TPM2_ALG.RSA):
        exponent = int(public.parameters.rsaDetail.exponent) or 65537
        modulus = int.from_bytes(bytes(public.unique.rsa), "big")
        try:
            return rsa.RSAPublicNumbers(exponent, modulus).public_key()
        except ValueError:
            raise MalformedInput(f"the {what} holds no valid RSA key") from None
    if int(public.type) == int(tss.TPM2_ALG.ECC):
        curves: dict[int, ec.EllipticCurve] = {
            int(tss.TPM2_ECC.NIST_P256): ec.SECP256R1(),
            int(tss.TPM2_ECC.NIST_P384): ec.SECP384R1(),
        }
        curve = curves.get(int(public.parameters.eccDetail.curveID))
        if curve is None:
            raise PolicyDenied(f"the {what} uses a curve we do not accept")
        point = public.unique.ecc
        try:
            return ec.EllipticCurvePublicNumbers(
                int.from_bytes(bytes(point.x), "big"), int.from_bytes(bytes(point.y), "big"), curve
            ).public_key()
        except ValueError:
            raise MalformedInput(f"the {what} holds no valid EC point") from None
    raise PolicyDenied(f"the {what} is neither an RSA nor an ECC key")


def _require(tss: Any, public: Any, what: str, wanted: Sequence[str], absent: str) -> None:
    flags = tss.TPMA_OBJECT
    attributes = int(public.objectAttributes)
    missing = [name for name in wanted if not attributes & int(getattr(flags, name.upper()))]
    if missing or attributes & int(getattr(flags, absent.upper())):
        raise PolicyDenied(
            f"the {what} is not a restricted {'signing' if absent == 'decrypt' else 'decryption'}"
            f" key bound to the TPM (needs {', '.join(wanted)}, not {absent})"
        )


_BOUND = ("fixedTPM", "fixedParent", "sensitiveDataOrigin", "restricted")


class AttestationKeyCA:
    """The two round trips of the module docstring, over the authority's issuing key."""

    def __init__(self, authority: Authority, ek_roots: Sequence[x509.Certificate]) -> None:
        self._authority = authority
        self._roots = list(ek_roots)

    @classmethod
    def of(cls, authority: Authority) -> AttestationKeyCA:
        return cls(authority, load_ek_roots(authority.ca.paths.root))

    # ----------------------------------------------------------------- checks

    def _verify_ek_chain(self, chain: Sequence[x509.Certificate], now: datetime) -> None:
        """Each certificate issued by the next, the last by a root; all valid ``now``.

        EK certificates break the Web PKI's rules (no subject, a critical SAN of TPM
        attributes), so the path is checked link by link rather than by a Web PKI verifier.
        """
        for certificate in chain:
            if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
                raise Unauthorized("the EK certificate chain has a certificate out of its validity")
        for child, parent in itertools.pairwise(chain):
            if not _issued_by(child, parent):
                raise Unauthorized("the EK certificate chain is not a chain")
        last = chain[-1]
        anchors = [root for root in self._roots if _issued_by(last, root)]
        if not anchors and not any(_same(last, root) for root in self._roots):
            raise Unauthorized(
                "the EK certificate does not chain to a TPM manufacturer root this CA trusts"
            )

    def _checked(self, request: AKEnrollment, now: datetime) -> tuple[Any, Any, bytes, bytes]:
        """(EK public, AK public, AK name, EK key hash) once every check of step 1 passed."""
        tss = _tss()
        self._verify_ek_chain(request.ek_chain, now)
        ek = _unmarshal_public(request.ek_public, "ek_public")
        ek_key = _public_key_of(tss, ek, "EK")
        if _spki(ek_key) != _spki(request.ek_chain[0].public_key()):
            raise Unauthorized("the EK public area is not the key of the EK certificate")
        _require(tss, ek, "EK", (*_BOUND, "decrypt"), "sign_encrypt")
        ak = _unmarshal_public(request.ak_public, "ak_public")
        _public_key_of(tss, ak, "AK")
        _require(tss, ak, "AK", (*_BOUND, "sign_encrypt"), "decrypt")
        return ek, ak, _name_of(ak, "ak_public"), hashlib.sha256(_spki(ek_key)).digest()

    def _nonce(self, secret: bytes, ak_name: bytes, ek_hash: bytes) -> str:
        digest = hashlib.sha256(b"ostiary-ak\0" + secret + ak_name + ek_hash)
        return base64.urlsafe_b64encode(digest.digest()).decode("ascii").rstrip("=")

    # ----------------------------------------------------------------- round trips

    def challenge(self, request: AKEnrollment, *, now: datetime) -> AKChallenge:
        """Step 1: checks, then MakeCredential of a fresh secret for this EK and AK."""
        ek, _ak, ak_name, ek_hash = self._checked(request, now)
        secret = secrets.token_bytes(32)
        from tpm2_pytss.utils import make_credential

        try:
            blob, encrypted = make_credential(ek, secret, ak_name)
        except (ValueError, TypeError) as exc:
            raise PolicyDenied(f"cannot make a credential for this EK: {exc}") from None
        expires_at = now + CHALLENGE_TTL
        with self._authority.store.transaction() as session:
            nonces = AttestationNonceRepository(session)
            nonces.purge_expired(now - timedelta(days=1))
            nonces.add(self._nonce(secret, ak_name, ek_hash), now=now, expires_at=expires_at)
        return AKChallenge(bytes(blob.marshal()), bytes(encrypted.marshal()), expires_at)

    def certify(self, request: AKEnrollment, secret: bytes, *, now: datetime) -> x509.Certificate:
        """Step 2: the activated secret, spent once; then the AK certificate."""
        _ek, ak, ak_name, ek_hash = self._checked(request, now)
        nonce = self._nonce(secret, ak_name, ek_hash)
        try:
            with self._authority.store.transaction() as session:
                AttestationNonceRepository(session).spend(nonce, now=now)
        except Conflict:
            raise Conflict(
                "this credential activation was already used: ask for a new challenge"
            ) from None
        except Unauthorized:
            raise Unauthorized(
                "the answer is not the secret of a challenge for this EK and AK (wrong "
                "ActivateCredential answer, another AK, or expired)"
            ) from None
        tss = _tss()
        key = _public_key_of(tss, ak, "AK")
        hex_hash = ek_hash.hex()
        names: list[x509.GeneralName] = []
        tpm = _tpm_attributes(request.ek_chain[0])
        if tpm:
            names.append(x509.DirectoryName(x509.Name(tpm)))
        names.append(x509.UniformResourceIdentifier(f"urn:ek:sha256:{hex_hash}"))
        names.append(permanent_identifier_name(hex_hash))
        authorization = Authorization(
            subject=x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, hex_hash)]),
            names=tuple(names),
            profile="attestation-key",
            lifetime=AK_LIFETIME,
            provisioner="attestation-ca",
        )
        return self._authority.issue_for_key(
            key,
            authorization,
            actor="attestation-ca",
            event="attestation_key.certified",
            details={
                "ek_sha256": hex_hash,
                "ek_issuer": request.ek_chain[0].issuer.rfc4514_string(),
            },
        )


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _same(a: x509.Certificate, b: x509.Certificate) -> bool:
    return a.public_bytes(serialization.Encoding.DER) == b.public_bytes(serialization.Encoding.DER)


def _tpm_attributes(ek_certificate: x509.Certificate) -> list[x509.NameAttribute[Any]]:
    """The TPM's manufacturer, model and version from the EK certificate's directoryName SAN."""
    try:
        san = ek_certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (x509.ExtensionNotFound, ValueError):
        return []
    found: list[x509.NameAttribute[Any]] = []
    for name in san.value.get_values_for_type(x509.DirectoryName):
        for attribute in name:
            if attribute.oid in _TPM_ATTRIBUTES and isinstance(attribute.value, str):
                found.append(x509.NameAttribute(attribute.oid, attribute.value))
    return found


__all__ = [
    "AK_LIFETIME",
    "EK_ROOTS_FILE",
    "AKChallenge",
    "AKEnrollment",
    "AttestationKeyCA",
    "load_ek_roots",
]
