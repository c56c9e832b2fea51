"""Client keys that live in a TPM 2.0 and cannot be copied off it (``--key-store tpm``).

:func:`create_tpm_key` has the TPM make a P-256 signing key under the owner hierarchy's
standard storage primary (the TCG "TSS2 private key" parent, which the tpm2 OpenSSL provider
recreates on its own): ``fixedTPM``, ``fixedParent``, ``sensitiveDataOrigin`` (the TPM made
the secret and will never export it), ``userWithAuth`` with the PIN as its authorization,
not ``restricted`` (it signs anything: CSRs, holder tokens, TLS handshakes). What we keep on
disk is the TPM's *wrapped* blob, as a ``TSS2 PRIVATE KEY`` PEM: useless without this TPM.

:class:`TpmPrivateKey` puts the key behind cryptography's private-key interface, so that the
CSR builder and the holder tokens of renewal sign through the TPM. Each signature opens the
TPM, loads the primary and the key, signs the digest (ECDSA) and flushes both handles: no
transient object stays behind. A wrong PIN is the TPM's own ``TPM_RC_AUTH_FAIL``
(:class:`~ostiary.core.errors.WrongPassword`); it counts towards the TPM's dictionary-attack
lockout, as it should.

:func:`certify_key` runs TPM2_Certify: the attestation key (a restricted signing key of the
same TPM, certified by an attestation CA) signs a statement naming the new key, with the CA's
nonce as ``extraData``. The CA checks it (:mod:`ostiary.provisioners.attest`).

Needs the ``tpm`` extra (``tpm2-pytss``, which links the system's ``libtss2``).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ostiary._tss import import_tss
from ostiary.core.errors import BadRequest, MalformedInput, Unavailable, WrongPassword
from ostiary.core.held_keys import HeldECPrivateKey, digest_for_signing

#: The PEM label of a TPM key blob (tpm2-tss-engine and tpm2-openssl read it).
TSS2_PEM_LABEL = "TSS2 PRIVATE KEY"
#: TPM_RC_AUTH_FAIL and TPM_RC_BAD_AUTH, without the session/parameter number bits.
_AUTH_FAILURES = (0x08E, 0x0A2)
_LOCKOUT = 0x921
_INITIALIZE = 0x100
#: TCTI modules a user may name (libtss2-tcti-NAME).
_KNOWN_TCTIS = ("device", "swtpm", "mssim", "tabrmd", "libtpms", "cmd", "spi-helper", "pcap")
_RC_FORMAT1 = 0x080


def _tss() -> Any:
    return import_tss("TPM keys")


def is_tpm_key_pem(data: bytes) -> bool:
    """Whether ``data`` is a ``TSS2 PRIVATE KEY`` PEM (a key held by a TPM)."""
    return f"-----BEGIN {TSS2_PEM_LABEL}-----".encode() in data


class PinRequired(BadRequest):
    """A key file marked as having a PIN, and no PIN given (the caller names its option)."""

    code = "tpm-pin-required"


class TpmLockout(Unavailable):
    """The TPM refuses every PIN-protected key until its lockout lifts or is cleared."""

    code = "tpm-lockout"


def clear_lockout_command(tcti: str | None) -> str:
    """The tpm2-tools command that clears the lockout of the TPM reached through ``tcti``."""
    reach = f"-T '{tcti}' " if tcti else ""
    return f"tpm2_dictionarylockout {reach}--clear-lockout"


def tpm_error(exc: Exception, what: str, *, tcti: str | None = None) -> Exception:
    """A TSS failure as one clear :class:`~ostiary.core.errors.OstiaryError`."""
    code = int(getattr(exc, "rc", 0) or 0)
    base = code & 0xFFF
    if code & _RC_FORMAT1:
        base &= 0x0BF
    if base in _AUTH_FAILURES:
        return WrongPassword(
            f"{what}: the TPM refused the PIN (authorization failed; each wrong PIN counts "
            "towards the TPM's lockout)"
        )
    if code & 0xFFF == _INITIALIZE:
        reach = f" -T '{tcti}'" if tcti else ""
        return Unavailable(
            f"{what}: the TPM was never started (TPM2_Startup); start it with: "
            f"tpm2_startup -c{reach}"
        )
    if base == _LOCKOUT:
        return TpmLockout(
            f"{what}: the TPM is in dictionary-attack lockout after wrong PINs, for every "
            "PIN-protected key on it; it lifts by itself after the TPM's recovery time, or "
            f"its owner clears it: {clear_lockout_command(tcti)} (add -p LOCKOUT-PASSWORD if "
            "the TPM has a lockout password)"
        )
    return Unavailable(f"{what}: the TPM failed ({type(exc).__name__}: {exc})")


@contextmanager
def open_tpm(tcti: str | None) -> Iterator[Any]:
    """An ESAPI context on the TPM reached through ``tcti`` (default: the system's)."""
    tss = _tss()
    _check_tcti(tcti)
    try:
        # Given as text, the TCTI belongs to the context and is closed with it (a TCTI
        # object passed in would stay open: a leaked connection to the TPM or its broker).
        context = tss.ESAPI(tcti or None)
    except tss.TSS2_Exception:
        raise Unavailable(f"cannot open the TPM: {_unreachable(tcti)}") from None
    try:
        yield context
    finally:
        context.close()


def _swtpm_address(conf: str) -> tuple[str, int] | None:
    """(host, port) of a ``swtpm:``/``mssim:`` configuration; ``None`` if malformed."""
    values = {"host": "localhost", "port": "2321"}
    for part in filter(None, conf.split(",")):
        key, equals, value = part.partition("=")
        if not equals or key not in values or not value:
            return None
        values[key] = value
    if not values["port"].isdigit() or not 0 < int(values["port"]) < 65536:
        return None
    return values["host"], int(values["port"])


def _check_tcti(tcti: str | None) -> None:
    """Refuse a TCTI string we can tell is wrong before the TSS tries it."""
    if not tcti:
        return
    name, _, conf = tcti.partition(":")
    if name not in _KNOWN_TCTIS:
        raise BadRequest(
            f"unknown TCTI {name!r} in {tcti!r}: use device:/dev/tpmrm0, "
            "swtpm:host=HOST,port=PORT, mssim:..., or tabrmd:"
        )
    if name in ("swtpm", "mssim") and _swtpm_address(conf) is None:
        raise BadRequest(f"malformed TCTI {tcti!r}: expected {name}:host=HOST,port=PORT")


def _unreachable(tcti: str | None) -> str:
    """What to check when the TPM cannot be opened through ``tcti``."""
    if not tcti:
        return (
            "no TPM through the default TCTI (tpm2-abrmd, /dev/tpmrm0, /dev/tpm0, then a "
            "simulator on localhost:2321): give --tcti or set OSTIARY_TPM_TCTI"
        )
    name, _, conf = tcti.partition(":")
    if name in ("swtpm", "mssim"):
        host, port = _swtpm_address(conf) or ("?", 0)
        return f"nothing is listening at {host}:{port} ({tcti}): is swtpm running there?"
    if name == "tabrmd":
        return (
            f"tpm2-abrmd does not answer ({tcti}): is it running, and on this D-Bus (the "
            "system bus, or bus_type=session with DBUS_SESSION_BUS_ADDRESS set)?"
        )
    if name == "device":
        path = Path(conf or "/dev/tpmrm0")
        if not path.exists():
            return f"{path} does not exist: no TPM, or its driver is not loaded"
        return (
            f"{path} cannot be opened: add your user to the group that owns it "
            "(usually 'tss'), or use tpm2-abrmd"
        )
    return f"the TPM does not answer through {tcti}"


def _key_template(tss: Any) -> Any:
    """P-256 ECDSA signing key, not restricted, bound to this TPM and its parent."""
    attributes = (
        tss.TPMA_OBJECT.FIXEDTPM
        | tss.TPMA_OBJECT.FIXEDPARENT
        | tss.TPMA_OBJECT.SENSITIVEDATAORIGIN
        | tss.TPMA_OBJECT.USERWITHAUTH
        | tss.TPMA_OBJECT.SIGN_ENCRYPT
    )
    return tss.TPMT_PUBLIC.parse("ecc256:null:null", objectAttributes=attributes)


def _storage_primary(context: Any, tcti: str | None = None) -> Any:
    """The standard TSS2 storage primary (owner hierarchy, ``noda``), made transient."""
    tss = _tss()
    try:
        return tss.tsskey.TSSPrivKey._getparent(context, tss.TPM2_ALG.ECC, tss.lib.TPM2_RH_OWNER)
    except tss.TSS2_Exception as exc:
        raise tpm_error(exc, "making the TPM's storage primary key", tcti=tcti) from None


@contextmanager
def loaded_keys(
    context: Any, *keys: tuple[Any, bytes | None], tcti: str | None = None
) -> Iterator[list[Any]]:
    """The standard primary and each ``(blob, pin)`` loaded under it; all flushed after.

    One primary for all: a TPM has few transient slots (three on swtpm).
    """
    tss = _tss()
    primary = _storage_primary(context, tcti)
    handles: list[Any] = []
    try:
        for blob, pin in keys:
            try:
                handle = context.load(primary, blob.private, blob.public)
            except tss.TSS2_Exception as exc:
                raise tpm_error(exc, "loading the key into the TPM", tcti=tcti) from None
            handles.append(handle)
            context.tr_set_auth(handle, pin or b"")
        yield handles
    finally:
        for handle in handles:
            context.flush_context(handle)
        context.flush_context(primary)


def _public_key_of(public_area: Any) -> ec.EllipticCurvePublicKey:
    curve = int(public_area.parameters.eccDetail.curveID)
    if curve != 3:  # TPM2_ECC_NIST_P256
        raise MalformedInput("the TPM key is not a P-256 key")
    numbers = ec.EllipticCurvePublicNumbers(
        int.from_bytes(bytes(public_area.unique.ecc.x), "big"),
        int.from_bytes(bytes(public_area.unique.ecc.y), "big"),
        ec.SECP256R1(),
    )
    return numbers.public_key()


class TpmPrivateKey(HeldECPrivateKey):
    """A P-256 key held by a TPM, behind cryptography's private-key interface.

    ``tcti`` says how to reach the TPM, ``pin`` is the key's authorization (not kept in the
    PEM). Signing goes to the TPM every time; nothing secret is in this object but the PIN.
    """

    held_in = "a TPM"

    def __init__(self, blob: Any, *, tcti: str | None, pin: bytes | None) -> None:
        if blob.public.publicArea.type != _tss().TPM2_ALG.ECC:
            raise MalformedInput("the TPM key is not an ECC key")
        super().__init__(_public_key_of(blob.public.publicArea))
        self._blob = blob
        self._tcti = tcti
        self._pin = pin

    @property
    def tcti(self) -> str | None:
        return self._tcti

    @property
    def public_area(self) -> bytes:
        """The key's TPMT_PUBLIC, marshalled: what its TPM name is computed from."""
        return bytes(self._blob.public.publicArea.marshal())

    def to_pem(self) -> bytes:
        """The wrapped key as a ``TSS2 PRIVATE KEY`` PEM (for the tpm2 OpenSSL provider)."""
        return bytes(self._blob.to_pem())

    def sign(
        self,
        data: bytes | bytearray | memoryview,
        signature_algorithm: ec.EllipticCurveSignatureAlgorithm,
    ) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise TypeError("a TPM key signs with ECDSA only")
        digest, algorithm = digest_for_signing(bytes(data), signature_algorithm.algorithm)
        tss = _tss()
        hash_alg = _TPM_HASHES.get(algorithm.name)
        if hash_alg is None:
            raise TypeError(f"the TPM signs SHA-256/384/512 digests, not {algorithm.name}")
        scheme = tss.TPMT_SIG_SCHEME(scheme=tss.TPM2_ALG.ECDSA)
        scheme.details.any.hashAlg = getattr(tss.TPM2_ALG, hash_alg)
        validation = tss.TPMT_TK_HASHCHECK(tag=tss.TPM2_ST.HASHCHECK, hierarchy=tss.TPM2_RH.NULL)
        with (
            open_tpm(self._tcti) as context,
            loaded_keys(context, (self._blob, self._pin), tcti=self._tcti) as keys,
        ):
            try:
                signature = context.sign(keys[0], digest, scheme, validation)
            except tss.TSS2_Exception as exc:
                raise tpm_error(exc, "signing with the TPM key", tcti=self._tcti) from None
        return _der_signature(signature)


_TPM_HASHES = {"sha256": "SHA256", "sha384": "SHA384", "sha512": "SHA512"}


def _der_signature(signature: Any) -> bytes:
    ecdsa = signature.signature.ecdsa
    return encode_dss_signature(
        int.from_bytes(bytes(ecdsa.signatureR), "big"),
        int.from_bytes(bytes(ecdsa.signatureS), "big"),
    )


def create_tpm_key(*, tcti: str | None = None, pin: bytes | None = None) -> TpmPrivateKey:
    """Have the TPM make a new signing key (see the module docstring)."""
    return _create_key(_key_template(_tss()), tcti=tcti, pin=pin)


def _create_key(template: Any, *, tcti: str | None, pin: bytes | None) -> TpmPrivateKey:
    tss = _tss()
    sensitive = tss.TPM2B_SENSITIVE_CREATE()
    if pin:
        sensitive.sensitive.userAuth = pin
    blob_type = tss.tsskey.TSSPrivKey
    with open_tpm(tcti) as context:
        primary = _storage_primary(context, tcti)
        try:
            private, public, _, _, _ = context.create(
                primary, sensitive, tss.TPM2B_PUBLIC(publicArea=template)
            )
        except tss.TSS2_Exception as exc:
            raise tpm_error(exc, "creating a key in the TPM", tcti=tcti) from None
        finally:
            context.flush_context(primary)
    blob = blob_type(private, public, empty_auth=not pin, parent=tss.lib.TPM2_RH_OWNER)
    return TpmPrivateKey(blob, tcti=tcti, pin=pin)


def load_tpm_key_pem(
    data: bytes, *, tcti: str | None, pin: bytes | None, what: str = "this TPM key"
) -> TpmPrivateKey:
    """A key from its ``TSS2 PRIVATE KEY`` PEM; the TPM is only opened when it signs.

    ``what`` names the key in errors (an attestation key is not the key being enrolled).
    """
    tss = _tss()
    try:
        blob = tss.tsskey.TSSPrivKey.from_pem(data)
    except (TypeError, ValueError) as exc:
        raise MalformedInput(f"{what} is not a TSS2 private key: {exc}") from None
    if not blob.empty_auth and not pin:
        raise PinRequired(f"{what} has a PIN and none was given")
    return TpmPrivateKey(blob, tcti=tcti, pin=pin if not blob.empty_auth else None)


@dataclass(frozen=True)
class AttestationKey:
    """The TPM's attestation key (a restricted signing key) and its certificate chain."""

    key: TpmPrivateKey
    chain: tuple[x509.Certificate, ...] = field(default=())


@dataclass(frozen=True)
class KeyAttestation:
    """TPM2_Certify's statement about a key, and what the CA needs to check it."""

    nonce: str
    attest: bytes
    signature: bytes
    public_area: bytes
    ak_chain: tuple[x509.Certificate, ...]

    def to_json(self) -> dict[str, Any]:
        """The ``attestation`` member of a sign request (see docs/api.md)."""
        return {
            "nonce": self.nonce,
            "certify_info": _b64(self.attest),
            "signature": _b64(self.signature),
            "public_area": _b64(self.public_area),
            "ak_chain": [_b64(c.public_bytes(serialization.Encoding.DER)) for c in self.ak_chain],
        }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def certify_key(key: TpmPrivateKey, ak: AttestationKey, nonce: str) -> KeyAttestation:
    """TPM2_Certify of ``key`` by the attestation key, over the CA's ``nonce`` (extraData)."""
    attest, signature = certify_key_over(key, ak, nonce.encode("ascii"))
    return KeyAttestation(
        nonce=nonce,
        attest=attest,
        signature=signature,
        public_area=key.public_area,
        ak_chain=ak.chain,
    )


def certify_key_over(
    key: TpmPrivateKey, ak: AttestationKey, qualifying_data: bytes
) -> tuple[bytes, bytes]:
    """TPM2_Certify of ``key`` by the attestation key over ``qualifying_data`` (extraData):
    the ``TPMS_ATTEST`` the TPM made and its ``TPMT_SIGNATURE``.

    Certifying uses the key's authorization (its PIN) and the AK's (none): the TPM proves
    both objects are loaded in it, and signs their relationship.
    """
    tss = _tss()
    if key.tcti != ak.key.tcti:
        raise BadRequest("the key and the attestation key must be in the same TPM")
    scheme = tss.TPMT_SIG_SCHEME(scheme=tss.TPM2_ALG.NULL)
    with (
        open_tpm(key.tcti) as context,
        loaded_keys(context, (key._blob, key._pin), (ak.key._blob, ak.key._pin), tcti=key.tcti) as (
            loaded,
            signer,
        ),
    ):
        try:
            attest, signature = context.certify(loaded, signer, qualifying_data, scheme)
        except tss.TSS2_Exception as exc:
            raise tpm_error(
                exc, "certifying the key with the attestation key", tcti=key.tcti
            ) from None
    return bytes(attest.marshal())[2:], bytes(signature.marshal())


def make_attestation_key_template() -> Any:
    """The TPMT_PUBLIC of an attestation key: restricted ECDSA-P256/SHA-256 signing key."""
    tss = _tss()
    attributes = (
        tss.TPMA_OBJECT.FIXEDTPM
        | tss.TPMA_OBJECT.FIXEDPARENT
        | tss.TPMA_OBJECT.SENSITIVEDATAORIGIN
        | tss.TPMA_OBJECT.USERWITHAUTH
        | tss.TPMA_OBJECT.RESTRICTED
        | tss.TPMA_OBJECT.SIGN_ENCRYPT
    )
    return tss.TPMT_PUBLIC.parse("ecc256:ecdsa-sha256:null", objectAttributes=attributes)


def create_attestation_key(
    *, tcti: str | None = None, chain: Sequence[x509.Certificate] = ()
) -> AttestationKey:
    """A new attestation key in the TPM (saved like any key, as a TSS2 PEM)."""
    key = _create_key(make_attestation_key_template(), tcti=tcti, pin=None)
    return AttestationKey(key, tuple(chain))


__all__ = [
    "TSS2_PEM_LABEL",
    "AttestationKey",
    "KeyAttestation",
    "PinRequired",
    "TpmLockout",
    "TpmPrivateKey",
    "certify_key",
    "certify_key_over",
    "clear_lockout_command",
    "create_attestation_key",
    "create_tpm_key",
    "is_tpm_key_pem",
    "load_tpm_key_pem",
    "open_tpm",
    "tpm_error",
]
