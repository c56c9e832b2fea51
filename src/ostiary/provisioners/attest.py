"""``attest`` provisioners: the key was made in a TPM that our attestation roots vouch for.

The client asks for a nonce (:mod:`ostiary.provisioners.attestation_nonces`,
``POST /attestation/nonce``),
has its TPM certify the new key with an attestation key (AK) over that nonce (TPM2_Certify,
TPM 2.0 Library Part 3 section 18.2) and sends, with its CSR, an :class:`AttestationStatement`:
the ``TPMS_ATTEST`` the TPM signed, the AK's signature over it, the key's ``TPMT_PUBLIC`` and
the AK's certificate chain. Before anything is issued the CA checks, in this order:

1. the AK certificate chains to one of the provisioner's attestation roots, is a v3
   end-entity certificate, has the tcg-kp-AIKCertificate usage (2.23.133.8.3) and names its
   TPM (manufacturer, model, version in a directoryName SAN);
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

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509

from ostiary.core.encoding import load_certificate_chain
from ostiary.core.errors import (
    BadRequest,
    MalformedInput,
    NotFound,
    PolicyDenied,
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
from ostiary.provisioners.manage import record_provisioner
from ostiary.provisioners.patterns import check_allowed_names
from ostiary.provisioners.tpm_statement import (
    AttestationStatement,
    check_key_attributes,
    spki_of,
    verify_ak_certificate,
    verify_certified_key,
)
from ostiary.store import (
    AttestationNonceRepository,
    AuditLog,
    ProvisionerRepository,
)
from ostiary.store import Store as Database

#: The provisioner type, as stored in the record.
ATTEST_TYPE = "attest"
#: Types whose requests can carry an attestation (``POST /sign``, the OIDC sign route,
#: ``POST /requests`` for officer approval).
ATTESTING_TYPES = ("jwk", "oidc", "approval")
#: Config key by which any provisioner names the ``attest`` provisioner it requires.
REQUIRE_ATTESTATION = "require_attestation"

_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*)){1,30}")


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
        ak_certificate = verify_ak_certificate(
            statement.ak_chain, self.roots, now=now, roots_of=f"provisioner {self.name!r}"
        )
        certified = verify_certified_key(
            ak_certificate,
            statement.certify_info,
            statement.signature,
            statement.public_area,
            extra_data=statement.nonce.encode("ascii"),
        )
        if certified.spki_der != spki_of(csr.public_key()):
            raise Unauthorized("the CSR's key is not the attested key")
        check_key_attributes(certified.attributes, require_pin=self.require_pin)
        return ak_certificate

    def authorize(
        self,
        ak_certificate: x509.Certificate,
        csr: x509.CertificateSigningRequest,
        *,
        requested_not_after: timedelta | datetime | None = None,
    ) -> Authorization:
        """The device named by the AK certificate, with this provisioner's policy OID."""
        subject = ak_certificate.subject
        # The TPM's manufacturer, model and version (a directoryName) describe the TPM, not
        # the device: they stay in the AK certificate.
        names = tuple(
            canonical_general_name(n)
            for n in sans_of(ak_certificate.extensions)
            if not isinstance(n, x509.DirectoryName)
        )
        if len(csr.subject) and csr.subject != subject:
            raise PolicyDenied(
                f"the CSR's subject {csr.subject.rfc4514_string()!r} is not this device's name: "
                f"it must be the attestation key certificate's, {subject.rfc4514_string()!r} "
                "(or empty)"
            )
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
    details = {k: v for k, v in config.items() if k != "roots"}
    details["roots"] = [c.subject.rfc4514_string() for c in provisioner.roots]
    record_provisioner(
        store,
        provisioner.name,
        type=ATTEST_TYPE,
        config=config,
        audited=details,
        now=now,
        actor=actor,
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
    "REQUIRE_ATTESTATION",
    "AttestProvisioner",
    "AttestationStatement",
    "CheckedAttestation",
    "add_attest_provisioner",
    "attestation_for",
    "authorize_attest_sign",
    "check_attestation",
    "load_attest_provisioner",
    "require_attestation",
    "spend_attestation",
    "with_attestation",
]
