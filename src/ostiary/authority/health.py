"""The pieces of the CA's health that ``ca status``, ``ca doctor``, the server log and
``/metrics`` share: which CA certificates to watch, when their expiry is worth a warning, how
fresh a CRL is, and findings (one line each, with a fix).

- :func:`ca_certificates` is the one list of CA certificates everything here iterates over:
  the root and every intermediate of the folder with its state (rollover's
  :class:`~ostiary.authority.rollover.IssuerState`), each with where its CRL is published.
  Expiry and CRLs are watched for the root, the active intermediate and the retiring ones (a
  retiring one still signs CRLs and answers OCSP for its leaves): :attr:`CACertificate.
  watched`; a retired, expired or revoked intermediate is listed, never warned about (unless
  it is the one still recorded as issuing and has expired: that is an error).
- Expiry: a warning at :data:`EXPIRY_WARNING_DAYS` (90, 30 and 7 days) before a CA
  certificate's ``not_after``, an error once it has passed (:func:`expiry_finding`).
- CRLs: a CRL past its ``nextUpdate`` is an error (RFC 5280 section 5.1.2.5: relying parties
  that enforce it refuse every client), one that cannot be read a warning
  (:func:`crl_finding`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from cryptography import x509

from ostiary.authority.folder import CRL_PATH, ROOT_CRL_PATH, CAPaths, load_ca_public
from ostiary.authority.rollover import IssuerState, list_issuers
from ostiary.core.ca import fingerprint_sha256, key_id_hex
from ostiary.store import Store
from ostiary.store.issuers import ACTIVE, RETIRING

#: Days before a CA certificate's ``not_after`` at which a warning is given.
EXPIRY_WARNING_DAYS = (90, 30, 7)
#: How long a CRL fetch from the CA's own URL may take.
FETCH_TIMEOUT = 5.0


class Level(enum.StrEnum):
    OK = "ok"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Finding:
    """One line of a health report: what is wrong (or right), and how to fix it."""

    level: Level
    code: str
    message: str
    hint: str | None = None

    def line(self) -> str:
        text = f"{self.level.value}: {self.message}"
        return f"{text} (fix: {self.hint})" if self.hint else text

    def as_json(self) -> dict[str, str | None]:
        return {
            "level": self.level.value,
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
        }


def worst(findings: list[Finding]) -> Level:
    """The most severe level among ``findings`` (OK if none)."""
    levels = {f.level for f in findings}
    for level in (Level.ERROR, Level.WARNING):
        if level in levels:
            return level
    return Level.OK


@dataclass(frozen=True)
class CACertificate:
    """A CA certificate of this CA, with the role it plays."""

    role: str
    certificate: x509.Certificate
    #: Where its CRL is published, relative to the CA's base URL (``/root.crl``, ``/crl`` for
    #: the folder's first intermediate, ``/crl/KEYID`` for one made by a rotation).
    crl_path: str
    #: An intermediate's state (active, retiring, retired, expired, revoked); None for the root.
    issuer: IssuerState | None = None

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    @property
    def fingerprint(self) -> str:
        return fingerprint_sha256(self.certificate)

    @property
    def key_id(self) -> str:
        return key_id_hex(self.certificate)

    @property
    def state(self) -> str | None:
        return None if self.issuer is None else self.issuer.state

    @property
    def watched(self) -> bool:
        """Whether its expiry and CRL are watched: the root, an active or retiring
        intermediate, and the one recorded as issuing even once it has expired.
        """
        return self.issuer is None or self.issuer.live or self.issuer.issuing


def ca_certificates(paths: CAPaths, store: Store, *, now: datetime) -> list[CACertificate]:
    """The CA certificates of this CA: the roots (the first, then those ``ca root rotate``
    made), then every intermediate (the issuing one first, then the others oldest first),
    each with its state. Needs no key.

    The one place that says which they are; status, doctor, the server log and ``/metrics``
    all iterate over this list (the last three over its :attr:`~CACertificate.watched` ones).
    """
    issuers = list_issuers(paths, store, now=now)
    first = issuers[0].key_id if issuers else None
    _config, root, _first = load_ca_public(paths)
    intermediates = [
        CACertificate(
            "intermediate",
            issuer.certificate,
            CRL_PATH if issuer.key_id == first else f"{CRL_PATH}/{issuer.key_id}",
            issuer,
        )
        for issuer in issuers
    ]
    intermediates.sort(key=lambda c: not (c.issuer is not None and c.issuer.issuing))
    # Roots made by ``ca root rotate`` publish their CRL at /crl/KEYID; every root is watched
    # (old clients trust the old one until it expires).
    roots = [CACertificate("root", root, ROOT_CRL_PATH)] + [
        CACertificate("root", later, f"{CRL_PATH}/{key_id_hex(later)}")
        for later in paths.rotated_roots()
        if key_id_hex(later) != key_id_hex(root)
    ]
    return [*roots, *intermediates]


def watched_certificates(paths: CAPaths, store: Store, *, now: datetime) -> list[CACertificate]:
    """The :attr:`~CACertificate.watched` ones of :func:`ca_certificates`."""
    return [ca for ca in ca_certificates(paths, store, now=now) if ca.watched]


def expiry_threshold(not_after: datetime, now: datetime) -> int | None:
    """The smallest of :data:`EXPIRY_WARNING_DAYS` that ``not_after`` is within, if any."""
    left = not_after - now
    crossed = [days for days in EXPIRY_WARNING_DAYS if left <= timedelta(days=days)]
    return min(crossed) if crossed else None


def expiry_finding(ca: CACertificate, now: datetime) -> Finding | None:
    """A warning within 90/30/7 days of ``not_after``, an error after it; None before."""
    left = ca.not_after - now
    what = f"{ca.state} {ca.role}" if ca.state in (ACTIVE, RETIRING) else ca.role
    if left <= timedelta():
        return Finding(
            Level.ERROR,
            f"{ca.role}-expired",
            f"the {what} CA certificate ({ca.subject}) expired on {_day(ca.not_after)}",
            _renew_hint(ca.role),
        )
    threshold = expiry_threshold(ca.not_after, now)
    if threshold is None:
        return None
    return Finding(
        Level.WARNING,
        f"{ca.role}-expires-within-{threshold}d",
        f"the {what} CA certificate ({ca.subject}) expires on {_day(ca.not_after)}, "
        f"in {left.days} days (less than {threshold})",
        _renew_hint(ca.role),
    )


def _renew_hint(role: str) -> str:
    if role == "root":
        return "make a new root and move trust to it before then (see docs/lifecycle.md)"
    return "run 'ostiary ca intermediate rotate' (docs/lifecycle.md)"


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class CrlState:
    """What is known of one issuer's published CRL: its times and number, or why not."""

    issuer: str
    source: str
    this_update: datetime | None = None
    next_update: datetime | None = None
    number: int | None = None
    problem: str | None = None
    #: The issuer's key id (which intermediate, once there are several).
    key_id: str | None = None

    def age(self, now: datetime) -> timedelta | None:
        return None if self.this_update is None else now - self.this_update

    def as_json(self, now: datetime) -> dict[str, object]:
        age = self.age(now)
        return {
            "issuer": self.issuer,
            "key_id": self.key_id,
            "source": self.source,
            "this_update": self.this_update.isoformat() if self.this_update else None,
            "next_update": self.next_update.isoformat() if self.next_update else None,
            "number": self.number,
            "age_seconds": int(age.total_seconds()) if age is not None else None,
            "problem": self.problem,
        }


def crl_state(issuer: str, source: str, der: bytes) -> CrlState:
    """The times and number of a DER (or PEM) CRL; a problem if it does not parse."""
    try:
        crl = (
            x509.load_pem_x509_crl(der)
            if der.lstrip().startswith(b"-----")
            else x509.load_der_x509_crl(der)
        )
    except ValueError:
        return CrlState(issuer, source, problem="not a CRL")
    try:
        number: int | None = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = None
    return CrlState(
        issuer,
        source,
        this_update=crl.last_update_utc,
        next_update=crl.next_update_utc,
        number=number,
    )


def read_crl_file(issuer: str, path: Path) -> CrlState:
    """The CRL kept in a file of the CA folder (the root's)."""
    try:
        der = path.read_bytes()
    except OSError as exc:
        return CrlState(issuer, str(path), problem=f"cannot read it: {exc.strerror or exc}")
    return crl_state(issuer, str(path), der)


def fetch_crl(issuer: str, url: str, *, timeout: float = FETCH_TIMEOUT) -> CrlState:
    """The CRL as relying parties get it, fetched from ``url``."""
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return CrlState(issuer, url, problem=f"not reachable: {type(exc).__name__}")
    if response.status_code != 200:
        return CrlState(issuer, url, problem=f"answered HTTP {response.status_code}")
    return crl_state(issuer, url, response.content)


#: How a CRL is fetched: (issuer, url) to what is known of it (:func:`fetch_crl`).
CrlFetcher = Callable[[str, str], CrlState]


def read_ca_crl(
    ca: CACertificate, paths: CAPaths, base: str | None, *, fetch: CrlFetcher = fetch_crl
) -> CrlState:
    """The CRL of ``ca``: the root's from its file, an intermediate's fetched from the CA's
    ``base`` URL plus its :attr:`~CACertificate.crl_path`, as relying parties fetch it.
    """
    if ca.role == "root":  # the first root's in certs/root.crl, a rotated one's beside it
        file = (
            paths.root_crl
            if ca.crl_path == ROOT_CRL_PATH
            else paths.root_certificates_dir / f"{ca.key_id}.crl"
        )
        state = read_crl_file(ca.role, file)
    elif base is None:
        state = CrlState(ca.role, ca.crl_path, problem="the CA has no URL (set 'url')")
    else:
        state = fetch(ca.role, base.rstrip("/") + ca.crl_path)
    return replace(state, key_id=ca.key_id)


def crl_finding(state: CrlState, now: datetime) -> Finding | None:
    """An error when the CRL is past its ``nextUpdate``; a warning when it was not read."""
    if state.problem is not None:
        return Finding(
            Level.WARNING,
            f"{state.issuer}-crl-unknown",
            f"the {state.issuer} CRL at {state.source}: {state.problem}",
            "'ostiary ca serve' with the CA password remakes a missing root CRL at start"
            if state.issuer == "root"
            else "start 'ostiary ca serve': it serves the issuing CA's CRL on its plain-HTTP "
            "address",
        )
    if state.next_update is not None and state.next_update < now:
        late = now - state.next_update
        return Finding(
            Level.ERROR,
            f"{state.issuer}-crl-stale",
            f"the {state.issuer} CRL at {state.source} is past its nextUpdate "
            f"({_day(state.next_update)}, {_span(late)} ago): relying parties that check "
            "it refuse every client",
            "restart 'ostiary ca serve' with the CA password (it remakes the root CRL when "
            "past half its life) or run it where the root key is"
            if state.issuer == "root"
            else "check that 'ostiary ca serve' runs and answers on its plain-HTTP address",
        )
    return None


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 86400:
        return f"{seconds // 86400} days"
    if seconds >= 3600:
        return f"{seconds // 3600} h"
    return f"{seconds // 60} min"


__all__ = [
    "EXPIRY_WARNING_DAYS",
    "CACertificate",
    "CrlFetcher",
    "CrlState",
    "Finding",
    "Level",
    "ca_certificates",
    "crl_finding",
    "crl_state",
    "expiry_finding",
    "expiry_threshold",
    "fetch_crl",
    "read_ca_crl",
    "read_crl_file",
    "watched_certificates",
    "worst",
]
