"""``ca doctor``: checks of a CA's setup that are cheap to make and costly to miss.

Each check gives findings (:class:`~ostiary.authority.health.Finding`), one line each with
its fix; an error-level one makes ``ca doctor`` exit non-zero.

- File modes: key files and the SQLite database (with its -wal/-shm) 0600, the CA folder and
  ``secrets/`` 0700 (nothing for the group or others).
- URLs in the CA's certificates (CRL distribution points, OCSP, caIssuers, in the root, the
  active and retiring intermediates, and in a leaf as the active one would issue it now):
  each answers over plain HTTP from the CA itself; an ``https://`` one is a warning (RFC 5280
  section 4.2.1.13 recommends http, Entra CBA fetches CRLs over http, our gateway checks
  such fetches against the system trust store), pointing at ``--http-address``.
- The active intermediate outlives the longest certificate the claims allow (a
  provisioner's may only be narrower): otherwise a leaf would be cut short or outlive its
  issuer (step-ca #381). The fix named is ``ostiary ca intermediate rotate``.
- Clock skew against the database: PostgreSQL's ``now()``; SQLite is this machine's clock,
  so there is nothing to compare.
- Replicas: every one seen lately runs the same version (the heartbeat table).
"""

from __future__ import annotations

import stat
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib.metadata import version as package_version
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID
from sqlalchemy import text

from ostiary.authority.folder import CAPaths, leaf_urls, rotated_leaf_urls
from ostiary.authority.health import CACertificate, Finding, Level
from ostiary.config import CAConfig
from ostiary.store import ReplicaRepository, Store
from ostiary.store.replicas import SILENT_AFTER

#: Clock skew against the database past which ``ca doctor`` fails: tokens, nonces and
#: certificates' validity are compared across machines.
MAX_SKEW = timedelta(seconds=5)
#: How long one URL check may take.
URL_TIMEOUT = 5.0

Prober = Callable[[str], str | None]


def check_file_modes(paths: CAPaths, config: CAConfig) -> list[Finding]:
    """Keys and the database 0600, the CA folder and ``secrets/`` 0700."""
    findings: list[Finding] = []
    folders = [paths.root, paths.root / "secrets"]
    for folder in folders:
        findings += _mode(folder, 0o700, "folder")
    keys = sorted((paths.root / "secrets").glob("*.key")) if folders[1].is_dir() else []
    for key in keys:
        findings += _mode(key, 0o600, "key file")
    if config.database_url is None:
        for name in ("ostiary.db", "ostiary.db-wal", "ostiary.db-shm"):
            if (paths.root / name).exists():
                findings += _mode(paths.root / name, 0o600, "database file")
    if not findings:
        findings.append(
            Finding(
                Level.OK,
                "file-modes",
                f"file modes: {len(keys)} key files and the database 0600, folders 0700",
            )
        )
    return findings


def _mode(path: Path, wanted: int, what: str) -> list[Finding]:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return []
    if mode & 0o077 == 0:
        return []
    return [
        Finding(
            Level.ERROR,
            "file-mode",
            f"{what} {path} is {mode:04o}: others on this machine can read it",
            f"chmod {wanted:o} {path}",
        )
    ]


def probe_http(url: str) -> str | None:
    """None if ``url`` answers (any status below 500) over plain HTTP; else why not."""
    try:
        response = httpx.get(url, timeout=URL_TIMEOUT)
    except httpx.HTTPError as exc:
        return f"not reachable ({type(exc).__name__})"
    if response.status_code >= 500:
        return f"answered HTTP {response.status_code}"
    return None


def certificate_urls(certificate: x509.Certificate) -> list[tuple[str, str]]:
    """(kind, URL) of every CRL distribution point, OCSP and caIssuers URL it names."""
    urls: list[tuple[str, str]] = []
    try:
        points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    except x509.ExtensionNotFound:
        pass
    else:
        for point in points.value:
            urls += [
                ("CRL", name.value)
                for name in point.full_name or ()
                if isinstance(name, x509.UniformResourceIdentifier)
            ]
    try:
        access = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    except x509.ExtensionNotFound:
        pass
    else:
        for description in access.value:
            if isinstance(description.access_location, x509.UniformResourceIdentifier):
                kind = (
                    "OCSP"
                    if description.access_method == AuthorityInformationAccessOID.OCSP
                    else "caIssuers"
                )
                urls.append((kind, description.access_location.value))
    return urls


def check_urls(
    certificates: list[CACertificate], config: CAConfig, *, probe: Prober = probe_http
) -> list[Finding]:
    """Every URL in the watched CA certificates (root, active and retiring intermediates:
    :func:`~ostiary.authority.health.ca_certificates`) and in the leaves the active
    intermediate issues now: plain HTTP, and answering from here.
    """
    watched = [c for c in certificates if c.watched]
    named: dict[str, tuple[str, str]] = {}
    for ca_cert in watched:
        for kind, url in certificate_urls(ca_cert.certificate):
            named.setdefault(url, (kind, f"the {_what(ca_cert)} certificate"))
    issuing = _issuing(watched)
    first = next((c for c in certificates if c.role != "root"), None)
    leaves = (
        rotated_leaf_urls(config.url, issuing.key_id)
        if issuing is not None and first is not None and issuing.key_id != first.key_id
        else leaf_urls(config.url)
    )
    pointers = (("CRL", leaves.crl), ("OCSP", leaves.ocsp), ("caIssuers", leaves.ca_issuers))
    for kind, pointer in pointers:
        if pointer is not None:
            named.setdefault(pointer, (kind, "the certificates it issues"))
    findings: list[Finding] = []
    for url, (kind, where) in named.items():
        if url.lower().startswith("https://"):
            findings.append(
                Finding(
                    Level.WARNING,
                    "https-url",
                    f"{kind} URL {url} in {where} is https: RFC 5280 recommends http there, "
                    "Entra CBA fetches CRLs over http, and 'ostiary gateway' checks those "
                    "fetches against the system trust store, so it refuses every client",
                    "serve CRL/OCSP/CA certificates over plain HTTP: 'ca serve --http-address "
                    "HOST:PORT' and a CA made with '--url http://HOST:PORT'",
                )
            )
            continue
        problem = probe(url)
        if problem is not None:
            findings.append(
                Finding(
                    Level.ERROR,
                    "url-unreachable",
                    f"{kind} URL {url} in {where}: {problem}",
                    "start 'ostiary ca serve' (its plain-HTTP listener, --http-address, "
                    "answers these) or fix the proxy in front of it",
                )
            )
    if not named:
        findings.append(
            Finding(
                Level.WARNING,
                "no-urls",
                "the CA's certificates name no CRL or OCSP URL: relying parties cannot "
                "check revocation",
                "give the CA a URL ('url' in ostiary.toml, '--url' at 'ca init')",
            )
        )
    elif not findings:
        findings.append(
            Finding(Level.OK, "urls", f"{len(named)} URLs in certificates answer over plain HTTP")
        )
    return findings


def check_lifetime(
    certificates: list[CACertificate], config: CAConfig, *, now: datetime
) -> list[Finding]:
    """The active (issuing) intermediate outlives the longest lifetime the CA's claims allow
    (a provisioner's claims may only narrow them: ``check_within``). Retiring ones issue
    nothing new, so their end does not cut a new certificate short.
    """
    longest = config.claims.max_lifetime
    findings = []
    issuing = _issuing(certificates)
    if issuing is not None and (left := issuing.not_after - now) < longest:
        findings.append(
            Finding(
                Level.ERROR,
                "issuer-shorter-than-max-lifetime",
                f"the active intermediate CA ({issuing.subject}) ends in {max(left.days, 0)} "
                f"days, sooner than the {longest.days}-day max_lifetime of the claims: new "
                "certificates would be cut short at its end",
                "rotate it ('ostiary ca intermediate rotate', see docs/lifecycle.md) or lower "
                "claims.max_lifetime in ostiary.toml",
            )
        )
    if not findings:
        findings.append(
            Finding(
                Level.OK,
                "lifetime",
                "the active intermediate outlives the longest certificate lifetime "
                f"({longest.days} days)",
            )
        )
    return findings


def _issuing(certificates: list[CACertificate]) -> CACertificate | None:
    """The intermediate recorded as issuing (active, or expired while still recorded so)."""
    return next((c for c in certificates if c.issuer is not None and c.issuer.issuing), None)


def _what(ca: CACertificate) -> str:
    return ca.role if ca.state is None else f"{ca.state} {ca.role}"


def check_clock(store: Store, *, now: Callable[[], datetime] | None = None) -> list[Finding]:
    """Compare this machine's clock with the database's (PostgreSQL ``clock_timestamp()``)."""
    clock = now or (lambda: datetime.now(UTC))
    with store.transaction(read_only=True) as session:
        dialect = session.get_bind().dialect.name
        if dialect != "postgresql":
            return [
                Finding(
                    Level.OK,
                    "clock-skew",
                    "clock skew: n/a (SQLite is on this machine and has no clock of its own)",
                )
            ]
        before = time.monotonic()
        local = clock()
        remote: datetime = session.scalar(text("SELECT clock_timestamp()"))
        elapsed = timedelta(seconds=time.monotonic() - before)
    skew = remote - (local + elapsed / 2)
    seconds = abs(skew.total_seconds())
    if abs(skew) > MAX_SKEW:
        return [
            Finding(
                Level.ERROR,
                "clock-skew",
                f"this machine's clock is {seconds:.1f} s "
                f"{'behind' if skew > timedelta() else 'ahead of'} the database's",
                "run NTP (chrony, systemd-timesyncd) here and on the database server",
            )
        ]
    return [Finding(Level.OK, "clock-skew", f"clock skew against the database: {seconds:.2f} s")]


def check_replicas(store: Store, *, now: datetime) -> list[Finding]:
    """Every replica seen lately runs the same version (and this one's, if it has a row)."""
    with store.transaction(read_only=True) as session:
        replicas = [
            r for r in ReplicaRepository(session).all() if now - r.last_seen <= SILENT_AFTER
        ]
    if not replicas:
        return [Finding(Level.OK, "replicas", "replicas: none running (no recent heartbeat)")]
    versions = sorted({r.version for r in replicas})
    if len(versions) > 1:
        listing = ", ".join(f"{r.host} ({r.instance_id[:8]}): {r.version}" for r in replicas)
        return [
            Finding(
                Level.ERROR,
                "replica-versions",
                f"replicas run different versions: {listing}",
                "upgrade every replica to the same version "
                f"(this one is {package_version('ostiary')})",
            )
        ]
    return [
        Finding(
            Level.OK,
            "replicas",
            f"{len(replicas)} replicas running, all version {versions[0]}",
        )
    ]


__all__ = [
    "MAX_SKEW",
    "certificate_urls",
    "check_clock",
    "check_file_modes",
    "check_lifetime",
    "check_replicas",
    "check_urls",
    "probe_http",
]
