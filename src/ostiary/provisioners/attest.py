"""``attest`` provisioners: the key was made in a TPM that our attestation roots vouch for.

The client asks for a nonce (:func:`issue_attestation_nonce`, ``POST /attestation/nonce``),
has its TPM certify the new key with an attestation key (AK) over that nonce (TPM2_Certify,
TPM 2.0 Library Part 3 section 18.2) and sends, with its CSR, an :class:`AttestationStatement`:
the ``TPMS_ATTEST`` the TPM signed, the AK's signature over it, the key's ``TPMT_PUBLIC`` and
the AK's certificate chain. Before anything is issued the CA checks, in this order:

1. the AK certificate chains to one of the provisioner's attestation roots;
2. the signature over ``TPMS_ATTEST`` verifies with the AK certificate's key;
3. ``TPMS_ATTEST`` is a certify statement made by a TPM (``magic`` = TPM_GENERATED_VALUE,
   ``type`` = TPM_ST_ATTEST_CERTIFY) and its ``extraData`` equals the nonce;
4. the certified name equals the name computed from the presented public area
   (``nameAlg || H(TPMT_PUBLIC)``), so the public area is the one the TPM vouched for;
5. that public key is the CSR's key;
6. the key's attributes: ``fixedTPM``, ``fixedParent``, ``sensitiveDataOrigin`` set,
   ``restricted`` clear, and ``userWithAuth`` when the provisioner requires a PIN;
7. the nonce was made by this CA, has not expired and is spent now, once, in the database.

Only then does the provisioner authorize, adding its certificate-policy OID ("key held in
hardware, PIN-protected"). The names are the device's: the AK certificate's subject and
SANs (the attestation CA named the device when it certified its AK), within the
provisioner's allowed-name patterns; a CSR asking for other names is refused.

Any other provisioner can require an attestation (``require_attestation`` names an ``attest``
provisioner, whose roots and policy OID apply): :func:`attestation_for` checks it before
the request's own credential is spent, :func:`with_attestation` spends the nonce after and
adds the policy OID. OIDC with an
attestation gives a certificate for "this signed-in person, with a key in this hardware".

Parsing the TPM structures uses ``tpm2-pytss`` (the ``tpm`` extra) on the CA too.
"""

from __future__ import annotations

import base64
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)
from sqlalchemy import select

from ostiary._tss import import_tss
from ostiary.core.encoding import load_certificate_chain
from ostiary.core.errors import (
    BadRequest,
    MalformedInput,
    NotFound,
    PolicyDenied,
    TooManyRequests,
    Unauthorized,
)
from ostiary.core.issuance import Authorization
from ostiary.core.names import canonical_general_name, format_general_name, sans_of
from ostiary.provisioners.base import (
    LEAF_PROFILES,
    CAIdentity,
    ProvisionerClaims,
    check_profile,
    precheck_request,
    validate_provisioner_name,
)
from ostiary.provisioners.patterns import check_allowed_names
from ostiary.store import (
    AttestationNonceRepository,
    AuditLog,
    ProvisionerRecord,
    ProvisionerRepository,
)
from ostiary.store import Store as Database

#: The provisioner type, as stored in the record.
ATTEST_TYPE = "attest"
#: How long a nonce may be used after it was made.
NONCE_TTL = timedelta(minutes=5)
#: How long spent nonces are kept after they expire (unspent ones go when they expire).
NONCE_RETENTION = timedelta(days=1)
#: Unspent nonces kept at most: anyone may ask for one (and each address only so often).
MAX_UNSPENT_NONCES = 10_000
#: Types whose requests can carry an attestation (``POST /sign``, the OIDC sign route,
#: ``POST /requests`` for officer approval).
ATTESTING_TYPES = ("jwk", "oidc", "approval")
#: Config key by which any provisioner names the ``attest`` provisioner it requires.
REQUIRE_ATTESTATION = "require_attestation"
#: Bounds on the decoded parts of a statement (a TPMS_ATTEST is a few hundred bytes).
MAX_STRUCTURE = 4096
MAX_CHAIN = 4

_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*)){1,30}")
_TPM_GENERATED = 0xFF544347


def _tss() -> Any:
    return import_tss("TPM attestation on the CA")


# --------------------------------------------------------------------------- nonces


def issue_attestation_nonce(
    store: Database, *, now: datetime, max_unspent: int = MAX_UNSPENT_NONCES
) -> tuple[str, datetime]:
    """A new nonce (256 bits, base64url) stored for single use; and when it expires.

    Only on a CA with an ``attest`` provisioner (:class:`NotFound` otherwise: nothing could
    ever spend it), and while fewer than ``max_unspent`` nonces wait to be spent
    (:class:`TooManyRequests` then, until the soonest expires): anyone may ask for one.
    """
    nonce = secrets.token_urlsafe(32)
    expires_at = now + NONCE_TTL
    with store.transaction() as session:
        attesting = select(ProvisionerRecord.id).where(ProvisionerRecord.type == ATTEST_TYPE)
        if session.scalars(attesting.limit(1)).first() is None:
            raise NotFound(
                "no provisioner of this CA takes TPM attestations: there is no nonce to give"
            )
        nonces = AttestationNonceRepository(session)
        # Unspent nonces go when they expire; spent ones are kept a day, so that a replay
        # is answered "already used" precisely.
        nonces.purge_expired(now, keep_spent_until=now - NONCE_RETENTION)
        waiting, soonest = nonces.unspent(now=now)
        if waiting >= max_unspent:
            wait = (soonest - now).total_seconds() if soonest is not None else 1.0
            raise TooManyRequests.wait(
                f"{waiting} attestation nonces are waiting to be used: ask again later", wait
            )
        nonces.add(nonce, now=now, expires_at=expires_at)
    return nonce, expires_at


# --------------------------------------------------------------------------- the statement


@dataclass(frozen=True)
class AttestationStatement:
    """What a client sends: see the module docstring and ``docs/api.md``."""

    nonce: str
    certify_info: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    public_area: bytes = field(repr=False)
    ak_chain: tuple[x509.Certificate, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AttestationStatement:
        nonce = data.get("nonce")
        if not isinstance(nonce, str) or not 16 <= len(nonce) <= 64 or not nonce.isascii():
            raise MalformedInput("the attestation's 'nonce' is not a nonce from this CA")
        chain = data.get("ak_chain")
        if not isinstance(chain, list) or not 1 <= len(chain) <= MAX_CHAIN:
            raise MalformedInput(
                f"the attestation's 'ak_chain' must list 1 to {MAX_CHAIN} certificates"
            )
        certificates: list[x509.Certificate] = []
        for entry in chain:
            der = _b64(entry, "ak_chain")
            certificates.extend(load_certificate_chain(der))
        return cls(
            nonce=nonce,
            certify_info=_b64(data.get("certify_info"), "certify_info"),
            signature=_b64(data.get("signature"), "signature"),
            public_area=_b64(data.get("public_area"), "public_area"),
            ak_chain=tuple(certificates),
        )


def _b64(value: object, name: str) -> bytes:
    if not isinstance(value, str) or len(value) > MAX_STRUCTURE * 2:
        raise MalformedInput(f"the attestation's {name!r} is missing or too long")
    try:
        data = base64.b64decode(value, validate=True)
    except ValueError:
        raise MalformedInput(f"the attestation's {name!r} is not base64") from None
    if not data:
        raise MalformedInput(f"the attestation's {name!r} is empty")
    return data


def _unmarshal(kind: Any, data: bytes, name: str) -> Any:
    tss = _tss()
    try:
        value, used = kind.unmarshal(data)
    except (tss.TSS2_Exception, ValueError, TypeError):
        raise MalformedInput(f"the attestation's {name!r} is not a valid {kind.__name__}") from None
    if used != len(data):
        raise MalformedInput(f"the attestation's {name!r} has trailing bytes")
    return value


# --------------------------------------------------------------------------- the provisioner


@dataclass(frozen=True)
class AttestProvisioner:
    """An ``attest`` provisioner: attestation roots, the policy OID it adds, the PIN rule."""

    name: str
    roots_pem: str
    policy_oid: str
    claims: ProvisionerClaims
    require_pin: bool = True
    profile: str = "client"

    def __post_init__(self) -> None:
        validate_provisioner_name(self.name)
        if not _OID.fullmatch(self.policy_oid):
            raise BadRequest(f"not a dotted policy OID: {self.policy_oid[:64]!r}")
        check_profile(self.profile, LEAF_PROFILES)
        if not self.roots:
            raise BadRequest("an attest provisioner needs at least one attestation root")

    @property
    def type(self) -> str:
        return ATTEST_TYPE

    @property
    def roots(self) -> list[x509.Certificate]:
        return load_certificate_chain(self.roots_pem.encode("ascii"))

    @classmethod
    def from_config(cls, name: str, config: Mapping[str, Any]) -> AttestProvisioner:
        try:
            return cls(
                name=name,
                roots_pem=str(config["roots"]),
                policy_oid=str(config["policy_oid"]),
                claims=ProvisionerClaims.from_config(config["claims"]),
                require_pin=bool(config.get("require_pin", True)),
                profile=str(config.get("profile", "client")),
            )
        except (KeyError, TypeError, BadRequest):
            raise MalformedInput(
                f"provisioner {name!r}: its stored configuration is damaged"
            ) from None

    def to_config(self) -> dict[str, Any]:
        return {
            "roots": self.roots_pem,
            "policy_oid": self.policy_oid,
            "require_pin": self.require_pin,
            "profile": self.profile,
            "profiles": [self.profile],
            "claims": self.claims.to_config(),
        }

    # ----------------------------------------------------------------- verifying

    def verify(
        self,
        statement: AttestationStatement,
        csr: x509.CertificateSigningRequest,
        *,
        now: datetime,
    ) -> x509.Certificate:
        """Checks 1 to 6 of the module docstring; the AK certificate. The nonce is not spent."""
        tss = _tss()
        ak_certificate = self._verify_ak_chain(statement.ak_chain, now=now)
        _verify_ak_signature(tss, ak_certificate, statement.certify_info, statement.signature)
        attest = _unmarshal(tss.TPMS_ATTEST, statement.certify_info, "certify_info")
        if int(attest.magic) != _TPM_GENERATED:
            raise Unauthorized("the attestation was not generated by a TPM (magic)")
        if int(attest.type) != int(tss.TPM2_ST.ATTEST_CERTIFY):
            raise Unauthorized("the attestation is not a TPM2_Certify statement")
        if not hmac.compare_digest(bytes(attest.extraData), statement.nonce.encode("ascii")):
            raise Unauthorized("the attestation was made over another nonce (extraData)")
        public = _unmarshal(tss.TPMT_PUBLIC, statement.public_area, "public_area")
        certified = bytes(attest.attested.certify.name)
        if not hmac.compare_digest(certified, bytes(public.get_name())):
            raise Unauthorized(
                "the certified name is not the name of the presented public area: the TPM "
                "vouched for another key"
            )
        key = _public_key_of(tss, public)
        if _spki(key) != _spki(csr.public_key()):
            raise Unauthorized("the CSR's key is not the attested key")
        self._check_attributes(tss, int(public.objectAttributes))
        return ak_certificate

    def _verify_ak_chain(
        self, chain: tuple[x509.Certificate, ...], *, now: datetime
    ) -> x509.Certificate:
        builder = PolicyBuilder().store(Store(self.roots)).time(now)
        ee_policy = ExtensionPolicy.permit_all().may_be_present(
            x509.BasicConstraints, Criticality.AGNOSTIC, None
        )
        verifier = builder.extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee_policy
        ).build_client_verifier()
        try:
            verifier.verify(chain[0], list(chain[1:]))
        except VerificationError:
            raise Unauthorized(
                "the attestation key's certificate does not chain to an attestation root "
                f"of provisioner {self.name!r}"
            ) from None
        return chain[0]

    def _check_attributes(self, tss: Any, attributes: int) -> None:
        flags = tss.TPMA_OBJECT
        required = {
            "fixedTPM": flags.FIXEDTPM,
            "fixedParent": flags.FIXEDPARENT,
            "sensitiveDataOrigin": flags.SENSITIVEDATAORIGIN,
        }
        if self.require_pin:
            required["userWithAuth"] = flags.USERWITHAUTH
        missing = [name for name, flag in required.items() if not attributes & int(flag)]
        if missing:
            raise PolicyDenied(
                f"the attested key lacks {', '.join(missing)}: it is not a key bound to the "
                "TPM as this provisioner requires",
                missing=missing,
            )
        if attributes & int(flags.RESTRICTED):
            raise PolicyDenied("the attested key is restricted: it cannot be a client key")

    def authorize(
        self,
        ak_certificate: x509.Certificate,
        csr: x509.CertificateSigningRequest,
        *,
        requested_not_after: timedelta | datetime | None = None,
    ) -> Authorization:
        """The device named by the AK certificate, with this provisioner's policy OID."""
        subject = ak_certificate.subject
        names = tuple(canonical_general_name(n) for n in sans_of(ak_certificate.extensions))
        requested = tuple(canonical_general_name(n) for n in sans_of(csr.extensions))
        if requested and set(requested) != set(names):
            asked = ", ".join(format_general_name(n) for n in requested)
            raise PolicyDenied(
                f"the CSR asks for {asked}; this device's attestation key certificate names "
                f"{', '.join(format_general_name(n) for n in names) or 'no SAN'}"
            )
        check_allowed_names(subject, names, self.claims.allowed_names)
        return Authorization(
            subject=subject,
            names=names,
            profile=self.profile,
            lifetime=self.claims.lifetime,
            requested=requested_not_after,
            policies=(self.policy_oid,),
            provisioner=self.name,
        )


def _verify_ak_signature(
    tss: Any, certificate: x509.Certificate, data: bytes, signature: bytes
) -> None:
    parsed = _unmarshal(tss.TPMT_SIGNATURE, signature, "signature")
    key = certificate.public_key()
    algorithm = int(parsed.sigAlg)
    try:
        if algorithm == int(tss.TPM2_ALG.ECDSA) and isinstance(key, ec.EllipticCurvePublicKey):
            ecdsa = parsed.signature.ecdsa
            der = encode_dss_signature(
                int.from_bytes(bytes(ecdsa.signatureR), "big"),
                int.from_bytes(bytes(ecdsa.signatureS), "big"),
            )
            key.verify(der, data, ec.ECDSA(_hash(tss, int(ecdsa.hash))))
        elif algorithm == int(tss.TPM2_ALG.RSASSA) and isinstance(key, rsa.RSAPublicKey):
            rsassa = parsed.signature.rsassa
            key.verify(bytes(rsassa.sig), data, padding.PKCS1v15(), _hash(tss, int(rsassa.hash)))
        else:
            raise Unauthorized("the attestation signature does not match the AK's key type")
    except InvalidSignature:
        raise Unauthorized("the attestation signature does not verify with the AK") from None


def _hash(tss: Any, algorithm: int) -> hashes.HashAlgorithm:
    known: dict[int, hashes.HashAlgorithm] = {
        int(tss.TPM2_ALG.SHA256): hashes.SHA256(),
        int(tss.TPM2_ALG.SHA384): hashes.SHA384(),
        int(tss.TPM2_ALG.SHA512): hashes.SHA512(),
    }
    if algorithm not in known:
        raise Unauthorized("the attestation is signed with a hash we do not accept")
    return known[algorithm]


def _public_key_of(tss: Any, public: Any) -> Any:
    if int(public.type) == int(tss.TPM2_ALG.ECC):
        curves: dict[int, ec.EllipticCurve] = {
            int(tss.TPM2_ECC.NIST_P256): ec.SECP256R1(),
            int(tss.TPM2_ECC.NIST_P384): ec.SECP384R1(),
        }
        curve = curves.get(int(public.parameters.eccDetail.curveID))
        if curve is None:
            raise PolicyDenied("the attested key uses a curve we do not accept")
        point = public.unique.ecc
        try:
            return ec.EllipticCurvePublicNumbers(
                int.from_bytes(bytes(point.x), "big"), int.from_bytes(bytes(point.y), "big"), curve
            ).public_key()
        except ValueError:
            raise MalformedInput("the attested public area holds no valid EC point") from None
    if int(public.type) == int(tss.TPM2_ALG.RSA):
        exponent = int(public.parameters.rsaDetail.exponent) or 65537
        modulus = int.from_bytes(bytes(public.unique.rsa), "big")
        try:
            return rsa.RSAPublicNumbers(exponent, modulus).public_key()
        except ValueError:
            raise MalformedInput("the attested public area holds no valid RSA key") from None
    raise PolicyDenied("the attested key is neither an ECC nor an RSA key")


def _spki(key: Any) -> bytes:
    data: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


# --------------------------------------------------------------------------- flows


def load_attest_provisioner(store: Database, name: str) -> AttestProvisioner:
    """The ``attest`` provisioner ``name``; :class:`Unauthorized` if there is none."""
    validate_provisioner_name(name)
    with store.transaction(read_only=True) as session:
        try:
            record = ProvisionerRepository(session).get(name)
        except NotFound:
            record = None
    if record is None or record.type != ATTEST_TYPE:
        raise Unauthorized(f"there is no attest provisioner named {name[:64]!r}")
    return AttestProvisioner.from_config(record.name, record.config)


@dataclass(frozen=True)
class CheckedAttestation:
    """An attestation that passed every check, its nonce still unspent (:func:`spend_attestation`).

    Checking first and spending last lets a request fail for any other reason (a bad token,
    a name rule) without using up the client's nonce, and without a "verified" audit entry.
    """

    provisioner: AttestProvisioner
    statement: AttestationStatement
    ak_certificate: x509.Certificate
    target: str
    for_provisioner: str

    @property
    def policies(self) -> tuple[str, ...]:
        return (self.provisioner.policy_oid,)


def check_attestation(
    store: Database,
    provisioner: AttestProvisioner,
    statement: AttestationStatement,
    csr: x509.CertificateSigningRequest,
    *,
    now: datetime,
    for_provisioner: str | None = None,
) -> CheckedAttestation:
    """Checks 1 to 6, and that the nonce is this CA's, unexpired and unused (not spent)."""
    from ostiary.core.errors import Conflict

    ak_certificate = provisioner.verify(statement, csr, now=now)
    checked = CheckedAttestation(
        provisioner=provisioner,
        statement=statement,
        ak_certificate=ak_certificate,
        target=csr.subject.rfc4514_string(),
        for_provisioner=for_provisioner or provisioner.name,
    )
    try:
        with store.transaction(read_only=True) as session:
            AttestationNonceRepository(session).check_usable(statement.nonce, now=now)
    except Conflict:
        spend_attestation(store, checked, now=now)  # audits the replay, then refuses it
        raise
    return checked


def spend_attestation(store: Database, checked: CheckedAttestation, *, now: datetime) -> None:
    """Spend the nonce once (check 7) with its audit entry; a refused replay is audited as
    ``attestation.replayed``.
    """
    from ostiary.core.errors import Conflict

    details = {
        "provisioner": checked.for_provisioner,
        "attest_provisioner": checked.provisioner.name,
        "ak_subject": checked.ak_certificate.subject.rfc4514_string(),
        "ak_serial": f"{checked.ak_certificate.serial_number:x}",
    }
    replayed = False
    with store.transaction() as session:
        try:
            AttestationNonceRepository(session).spend(checked.statement.nonce, now=now)
        except Conflict:
            replayed = True
        AuditLog(session).append(
            "attestation.replayed" if replayed else "attestation.verified",
            at=now,
            actor=f"attest:{checked.provisioner.name}",
            target=checked.target,
            details=details,
        )
    if replayed:
        raise Conflict("this attestation was already used: attestations are single-use")


def authorize_attest_sign(
    store: Database,
    provisioner: str,
    statement: AttestationStatement,
    csr: x509.CertificateSigningRequest,
    *,
    ca: CAIdentity,
    now: datetime,
    requested_not_after: timedelta | datetime | None = None,
) -> Authorization:
    """Verify ``statement`` for ``csr`` with the ``attest`` provisioner; what it authorizes."""
    loaded = load_attest_provisioner(store, provisioner)
    checked = check_attestation(store, loaded, statement, csr, now=now)
    authorization = loaded.authorize(
        checked.ak_certificate, csr, requested_not_after=requested_not_after
    )
    precheck_request(csr, authorization, ca=ca, now=now)
    spend_attestation(store, checked, now=now)
    return authorization


def attestation_for(
    store: Database,
    provisioner: str,
    attestation: Mapping[str, Any] | None,
    csr: x509.CertificateSigningRequest,
    *,
    now: datetime,
) -> CheckedAttestation | None:
    """For any provisioner: the checked attestation its request must carry, or ``None``.

    A provisioner whose record has ``require_attestation`` refuses a request without an
    attestation (:class:`PolicyDenied`); one without it refuses a request with one (an
    attestation nobody checks must not look accepted). Call before spending the request's
    own credential, and :func:`with_attestation` after.
    """
    config: Mapping[str, Any] = {}
    if provisioner:
        with store.transaction(read_only=True) as session:
            try:
                config = ProvisionerRepository(session).get(provisioner).config
            except NotFound:
                config = {}
    required = config.get(REQUIRE_ATTESTATION)
    if not required:
        if attestation is not None:
            raise BadRequest(f"provisioner {provisioner!r} does not take key attestations")
        return None
    if attestation is None:
        raise PolicyDenied(
            f"provisioner {provisioner!r} requires a TPM attestation of the key "
            "(ostiary cert request --key-store tpm --attest-key ...)"
        )
    attest = load_attest_provisioner(store, str(required))
    statement = AttestationStatement.from_json(attestation)
    return check_attestation(store, attest, statement, csr, now=now, for_provisioner=provisioner)


def with_attestation(
    store: Database,
    authorization: Authorization,
    checked: CheckedAttestation | None,
    *,
    now: datetime,
) -> Authorization:
    """Spend ``checked``'s nonce and add its policy OIDs (once each) to ``authorization``."""
    if checked is None:
        return authorization
    spend_attestation(store, checked, now=now)
    merged = tuple(dict.fromkeys((*authorization.policies, *checked.policies)))
    return replace(authorization, policies=merged)


def add_attest_provisioner(
    store: Database,
    provisioner: AttestProvisioner,
    *,
    now: datetime,
    ca_claims: ProvisionerClaims | None = None,
    actor: str | None = None,
) -> AttestProvisioner:
    """Record ``provisioner`` with a "provisioner.added" entry; :class:`Conflict` if taken."""
    if ca_claims is not None:
        provisioner.claims.check_within(ca_claims)
    config = provisioner.to_config()
    with store.transaction() as session:
        ProvisionerRepository(session).add(
            provisioner.name, type=ATTEST_TYPE, config=config, now=now
        )
        details = {k: v for k, v in config.items() if k != "roots"}
        details["roots"] = [c.subject.rfc4514_string() for c in provisioner.roots]
        AuditLog(session).append(
            "provisioner.added",
            at=now,
            actor=actor,
            target=provisioner.name,
            details={"type": ATTEST_TYPE, **details},
        )
    return provisioner


def require_attestation(
    store: Database, provisioner: str, attest: str | None, *, now: datetime, actor: str | None
) -> None:
    """Make ``provisioner`` (any type) require an attestation checked by ``attest``
    (``None``: no longer require one); audited as "provisioner.updated".
    """
    if attest is not None:
        load_attest_provisioner(store, attest)
        if attest == provisioner:
            raise BadRequest("an attest provisioner attests by itself; name another provisioner")
    with store.transaction() as session:
        repository = ProvisionerRepository(session)
        record = repository.get(provisioner)
        if attest is not None and record.type not in ATTESTING_TYPES:
            raise BadRequest(
                f"provisioner {provisioner!r} is of type {record.type!r}: only "
                f"{', '.join(ATTESTING_TYPES)} provisioners take attestations with a request"
            )
        config = dict(record.config)
        if attest is None:
            config.pop(REQUIRE_ATTESTATION, None)
        else:
            config[REQUIRE_ATTESTATION] = attest
        repository.update(provisioner, config=config, now=now)
        AuditLog(session).append(
            "provisioner.updated",
            at=now,
            actor=actor,
            target=provisioner,
            details={REQUIRE_ATTESTATION: attest},
        )


__all__ = [
    "ATTEST_TYPE",
    "NONCE_TTL",
    "REQUIRE_ATTESTATION",
    "AttestProvisioner",
    "AttestationStatement",
    "CheckedAttestation",
    "add_attest_provisioner",
    "attestation_for",
    "authorize_attest_sign",
    "check_attestation",
    "issue_attestation_nonce",
    "load_attest_provisioner",
    "require_attestation",
    "spend_attestation",
    "with_attestation",
]
