"""One-time secrets bound to names, for phones: ACME ClientIdentifiers and enrollment codes.

Where a phone enrolls (the *target*) is a ``scep`` provisioner with one-time challenges, or an
``acme`` provisioner offering ``device-attest-01`` (Apple's ACME payload). The names always
come from here, from an officer's command or a sign-in, never from the device:

- :func:`make_client_id`: a ``ClientIdentifier`` for Apple's ACME payload
  (``ostiary ca acme client-id``). The device sends it as its ``permanent-identifier``; when
  the device-attest-01 challenge starts, :func:`spend_client_id` spends it for that order, the
  Apple validator then accepts it in place of the device's serial number or UDID, and the
  order's certificate carries the names bound here (:func:`client_id_authorization`), not the
  identifier.
- :func:`make_enroll_code`: a short code an officer gives a person (``ostiary ca
  enroll-code``), typed on the ``/enroll`` page; :func:`redeem_enroll_code` spends it and the
  page makes a fresh SCEP challenge or ClientIdentifier for the same names.

Only SHA-256 digests are kept (:mod:`ostiary.store.enrollment`), spent once across replicas.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from cryptography import x509
from sqlalchemy.orm import Session

from ostiary.core.errors import BadRequest, NotFound, PolicyDenied, Unauthorized
from ostiary.core.issuance import Authorization
from ostiary.core.names import format_general_name, parse_san, parse_subject
from ostiary.core.profiles import get_profile
from ostiary.provisioners.acme import ACME_TYPE, AcmeProvisioner
from ostiary.provisioners.patterns import check_allowed_names
from ostiary.provisioners.scep import SCEP_TYPE, ScepProvisioner
from ostiary.store import AuditLog, ProvisionerRepository, Store
from ostiary.store.enrollment import (
    ACME_CLIENT_ID,
    ENROLL_CODE,
    EnrollmentSecretRepository,
)

MAX_TTL = timedelta(days=30)
DEVICE_ATTEST = "device-attest-01"
#: Enrollment codes are typed on a phone: 12 characters of this alphabet (60 bits), shown
#: in groups of four; no 0/O, 1/I/L.
_CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
_CODE_LENGTH = 12

TargetKind = Literal["scep", "acme"]


@dataclass(frozen=True)
class Target:
    """Where a phone enrolls: a one-time ``scep`` provisioner or an Apple-ready ``acme`` one."""

    name: str
    kind: TargetKind
    scep: ScepProvisioner | None = None
    acme: AcmeProvisioner | None = None

    def authorization(self, subject: str, sans: list[str]) -> Authorization:
        """What a certificate for these names through this target would be granted; the
        names checked now as issuance checks them (allowed names, the profile's name kinds).
        """
        parsed_subject = parse_subject(subject)
        names = tuple(parse_san(text) for text in sans)
        if self.scep is not None:
            claims, profile = self.scep.claims, self.scep.profile
        elif self.acme is not None:
            claims, profile = self.acme.claims, self.acme.default_profile
        else:  # pragma: no cover - a Target is made by load_target only
            raise BadRequest(f"provisioner {self.name!r} is no enrollment target")
        check_allowed_names(parsed_subject, names, claims.allowed_names)
        get_profile(profile).check_names(list(names))
        return Authorization(
            subject=parsed_subject,
            names=names,
            profile=profile,
            lifetime=claims.lifetime,
            provisioner=self.name,
        )


def load_target(store: Store, name: str) -> Target:
    """The ``scep`` (one-time challenges) or ``acme`` (device-attest-01) provisioner ``name``."""
    with store.transaction(read_only=True) as session:
        record = ProvisionerRepository(session).get(name)
    if record.type == SCEP_TYPE:
        scep = ScepProvisioner.from_config(record.name, record.config)
        if scep.challenge != "one-time":
            raise PolicyDenied(
                f"provisioner {name!r} uses a {scep.challenge} challenge: a profile needs "
                "one-time challenges"
            )
        return Target(record.name, "scep", scep=scep)
    if record.type == ACME_TYPE:
        acme = AcmeProvisioner.from_config(record.name, record.config)
        if DEVICE_ATTEST not in acme.challenges or "apple" not in acme.attestation_formats:
            raise PolicyDenied(
                f"provisioner {name!r} does not offer device-attest-01 with the apple format: "
                "Apple's ACME payload needs it"
            )
        return Target(record.name, "acme", acme=acme)
    raise PolicyDenied(
        f"provisioner {name!r} is of type {record.type!r}: phones enroll through a scep "
        "or an acme (device-attest-01) provisioner",
        name=name,
    )


def default_target(store: Store) -> Target:
    """The one place phones enroll when none is named: an Apple-ready ``acme`` provisioner
    if there is exactly one, else the one one-time ``scep`` provisioner.
    """
    with store.transaction(read_only=True) as session:
        records = ProvisionerRepository(session).list()
    acme: list[Target] = []
    scep: list[Target] = []
    for record in records:
        if record.type not in (ACME_TYPE, SCEP_TYPE):
            continue
        try:
            target = load_target(store, record.name)
        except (PolicyDenied, BadRequest):
            continue
        (acme if target.kind == "acme" else scep).append(target)
    for found in (acme, scep):
        if len(found) == 1:
            chosen: Target = found[0]
            return chosen
        if len(found) > 1:
            raise BadRequest(
                "several provisioners could enroll phones ("
                + ", ".join(t.name for t in found)
                + "): a sign-in on the /enroll page needs exactly one; enrollment codes and "
                "the command line name theirs with --provisioner"
            )
    raise NotFound(
        "no provisioner enrolls phones: add a scep provisioner (one-time challenges) or an "
        "acme provisioner with device-attest-01"
    )


# --------------------------------------------------------------------------- secrets


@dataclass(frozen=True)
class BoundSecret:
    """A secret as made: its value (shown once) and what it grants."""

    value: str
    kind: str
    provisioner: str
    subject: str
    sans: tuple[str, ...]
    expires_at: datetime


def make_client_id(
    store: Store,
    target: Target,
    *,
    subject: str,
    sans: tuple[str, ...],
    ttl: timedelta,
    now: datetime,
    actor: str | None,
) -> BoundSecret:
    """A one-time ClientIdentifier for the ``acme`` target, bound to these names."""
    if target.kind != "acme":
        raise BadRequest(f"provisioner {target.name!r} is not an acme provisioner")
    return _make(store, target, ACME_CLIENT_ID, secrets.token_hex(20), subject, sans, ttl, now,
                 actor)  # fmt: skip


def make_enroll_code(
    store: Store,
    target: Target,
    *,
    subject: str,
    sans: tuple[str, ...],
    ttl: timedelta,
    now: datetime,
    actor: str | None,
) -> BoundSecret:
    """A one-time code for the ``/enroll`` page, for a phone profile through ``target``."""
    code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(_CODE_LENGTH))
    return _make(store, target, ENROLL_CODE, code, subject, sans, ttl, now, actor)


def format_code(code: str) -> str:
    """``ABCD-EFGH-JKMN``: easier to read out and type."""
    return "-".join(code[i : i + 4] for i in range(0, len(code), 4))


def normalize_code(text: str) -> str:
    """A typed code in its stored form: upper case, no separators or spaces."""
    return "".join(c for c in text.upper() if c.isalnum())[:64]


def _make(
    store: Store,
    target: Target,
    kind: str,
    value: str,
    subject: str,
    sans: tuple[str, ...],
    ttl: timedelta,
    now: datetime,
    actor: str | None,
) -> BoundSecret:
    if not timedelta(minutes=1) <= ttl <= MAX_TTL:
        raise BadRequest("a one-time secret lives between 1m and 30d")
    authorization = target.authorization(subject, list(sans))
    bound_subject = authorization.subject.rfc4514_string()
    names = [format_general_name(n) for n in authorization.names]
    with store.transaction() as session:
        EnrollmentSecretRepository(session).add(
            value, kind=kind, provisioner=target.name, subject=bound_subject, sans=names,
            now=now, expires_at=now + ttl,
        )  # fmt: skip
        AuditLog(session).append(
            f"{kind.replace('-', '_')}.created",
            at=now,
            actor=actor,
            target=target.name,
            details={"subject": bound_subject, "san": names},
        )
    return BoundSecret(value, kind, target.name, bound_subject, tuple(names), now + ttl)


def redeem_enroll_code(
    store: Store, code: str, *, now: datetime, actor: str | None
) -> tuple[str, str, tuple[str, ...]]:
    """Spend an enrollment code; the target provisioner, subject and SANs it was bound to.

    A wrong, used or expired code is :class:`Unauthorized` (one message for all three, so
    that the page tells a guesser nothing), and nothing changes.
    """
    typed = normalize_code(code)
    refused = Unauthorized("this enrollment code is wrong, used or expired: ask for a new one")
    if len(typed) != _CODE_LENGTH:
        raise refused
    with store.transaction() as session:
        repository = EnrollmentSecretRepository(session)
        row = repository.find(ENROLL_CODE, typed)
        if row is None or not repository.spend(row.secret_sha256, now=now):
            raise refused
        bound = (row.provisioner, row.subject, tuple(row.sans))
        AuditLog(session).append(
            "enroll_code.used",
            at=now,
            actor=actor,
            target=row.provisioner,
            details={"subject": row.subject, "san": list(row.sans)},
        )
    return bound


def spend_client_id(
    session: Session, provisioner: str, value: str, *, order_id: str, now: datetime
) -> bool:
    """Spend ``value`` if it is an unused ClientIdentifier of ``provisioner`` (for the
    order ``order_id``); False if it is none (a device serial or UDID, say) or is spent.
    """
    repository = EnrollmentSecretRepository(session)
    row = repository.find(ACME_CLIENT_ID, value)
    if row is None or row.provisioner != provisioner:
        return False
    return repository.spend(row.secret_sha256, now=now, used_by=order_id)


def pending_client_id(
    session: Session, provisioner: str, value: str, *, now: datetime
) -> tuple[str, tuple[str, ...]] | None:
    """The names an unused, unexpired ClientIdentifier ``value`` of ``provisioner`` grants."""
    row = EnrollmentSecretRepository(session).find(ACME_CLIENT_ID, value)
    if row is None or row.provisioner != provisioner or row.used_at is not None:
        return None
    if row.expires_at <= now:
        return None
    return row.subject, tuple(row.sans)


def client_id_names(
    session: Session, provisioner: str, order_id: str
) -> tuple[x509.Name, tuple[x509.GeneralName, ...]] | None:
    """The subject and SANs of the ClientIdentifier spent for ``order_id``, if one was."""
    row = EnrollmentSecretRepository(session).spent_by(ACME_CLIENT_ID, order_id)
    if row is None or row.provisioner != provisioner:
        return None
    return parse_subject(row.subject), tuple(parse_san(text) for text in row.sans)


__all__ = [
    "DEVICE_ATTEST",
    "BoundSecret",
    "Target",
    "client_id_names",
    "default_target",
    "format_code",
    "load_target",
    "make_client_id",
    "make_enroll_code",
    "normalize_code",
    "pending_client_id",
    "redeem_enroll_code",
    "spend_client_id",
]
