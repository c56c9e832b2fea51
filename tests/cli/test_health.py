"""``ca status`` and ``ca doctor`` on a CA with real trouble in it, and the server's pulse.

The CA is made by Ostiary's own ``init_ca_folder`` at an injected moment in the past, so its
intermediate ends 20 days from now; its root CRL was signed three days ago with a one-day
life (stale); certificates end in 3 and 15 days; a request waits for an officer; one
replica beats, another went silent. On SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import logging
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from ostiary.authority.authority import Authority
from ostiary.authority.doctor import check_clock, check_replicas
from ostiary.authority.folder import CAMaterial, CAPaths, init_ca_folder
from ostiary.authority.health import CrlState, Level, fetch_crl
from ostiary.authority.rollover import revoke_intermediate, rotate_intermediate
from ostiary.authority.root_crl import publish_root_crl
from ostiary.authority.status import collect_status
from ostiary.config import CAConfig
from ostiary.core.ca import INTERMEDIATE_LIFETIME, fingerprint_sha256, key_id_hex
from ostiary.core.issuance import Authorization
from ostiary.core.lifetime import Lifetime
from ostiary.core.names import parse_subject
from ostiary.server.heartbeat import HealthWatch
from ostiary.server.metrics import HealthCollector
from ostiary.store import (
    CertificateRequest,
    ReplicaRepository,
    RequestRepository,
    RequestStatus,
    Store,
    migrate,
)
from tests.cli.conftest import CLI
from tests.server.conftest import make_csr

PASSWORD = b"health tests: correct horse battery staple"
#: The intermediate ends this long after the tests run.
INTERMEDIATE_LEFT = timedelta(days=20)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_ageing_ca(folder: Path, database_url: str | None, url: str) -> CAMaterial:
    """A CA made so long ago that its intermediate has :data:`INTERMEDIATE_LEFT` left."""
    made = datetime.now(UTC) - (INTERMEDIATE_LIFETIME - INTERMEDIATE_LEFT)
    config = CAConfig(name="Ageing", url=url, database_url=database_url)
    material = init_ca_folder(CAPaths(folder), config, PASSWORD, now=made)
    migrate(material.database_url)
    return material


def issue(authority: Authority, subject: str, lifetime: timedelta) -> x509.Certificate:
    csr, _ = make_csr(subject)
    return authority.issue(
        x509.load_pem_x509_csr(csr.encode()),
        Authorization(
            subject=parse_subject(subject),
            names=(),
            lifetime=Lifetime(timedelta(minutes=5), lifetime, lifetime),
            provisioner="ops",
        ),
        actor="test",
    )


@pytest.fixture
def troubled_ca(tmp_path: Path, database_url: str) -> CAMaterial:
    """The CA of the module docstring, its trouble recorded in its database."""
    sqlite = database_url.startswith("sqlite")
    material = make_ageing_ca(
        tmp_path / "ca", None if sqlite else database_url, f"http://127.0.0.1:{_closed_port()}"
    )
    store = Store.from_url(material.database_url)
    now = datetime.now(UTC)
    try:
        authority = Authority(material, store)
        issue(authority, "soon", timedelta(days=3))
        issue(authority, "later", timedelta(days=15))
        renewed = issue(authority, "renewed", timedelta(days=2))
        # A certificate that was renewed is not about to end for anyone: not counted.
        csr, _ = make_csr("renewed")
        authority.renew(
            renewed,
            Authorization(
                subject=parse_subject("renewed"),
                names=(),
                lifetime=Lifetime(timedelta(minutes=5), timedelta(days=19), timedelta(days=19)),
                provisioner="ops",
            ),
            x509.load_pem_x509_csr(csr.encode()).public_key(),
            actor="test",
            csr=x509.load_pem_x509_csr(csr.encode()),
        )
        root_signer = material.load_root_signer(PASSWORD)
        try:
            publish_root_crl(
                material,
                store,
                root_signer,
                now=now - timedelta(days=3),
                actor="test",
                lifetime=timedelta(days=1),
            )
        finally:
            root_signer.close()
        with store.transaction() as session:
            RequestRepository(session).add(
                CertificateRequest(
                    request_id="a" * 32,
                    provisioner="door",
                    subject="CN=garage",
                    sans=[],
                    csr_pem=make_csr("garage")[0],
                    note=None,
                    code_sha256=None,
                    status=RequestStatus.PENDING.value,
                    created_at=now - timedelta(hours=2),
                    expires_at=now + timedelta(hours=22),
                )
            )
            replicas = ReplicaRepository(session)
            replicas.beat("live" * 8, host="ca-1", version="0.1.0", now=now)
            replicas.beat("gone" * 8, host="ca-2", version="0.1.0", now=now - timedelta(hours=1))
    finally:
        store.dispose()
    return material


def test_status_reports_an_ageing_intermediate_a_stale_crl_and_what_waits(
    cli: CLI, troubled_ca: CAMaterial
) -> None:
    folder = troubled_ca.paths.root
    result = cli("ca", "status", "--dir", folder, "--format", "json")
    assert result.exit_code == 1, result.stdout + result.stderr  # the stale CRL is an error
    report = json.loads(result.stdout)
    assert report["level"] == "error"
    roles = {c["role"]: c for c in report["ca_certificates"]}
    left = roles["intermediate"]["seconds_left"]
    assert INTERMEDIATE_LEFT.total_seconds() - 600 < left <= INTERMEDIATE_LEFT.total_seconds()
    codes = {f["code"]: f for f in report["findings"]}
    assert codes["intermediate-expires-within-30d"]["level"] == "warning"
    assert "root-expires-within-90d" not in codes  # the root has years left
    assert codes["root-crl-stale"]["level"] == "error"
    assert codes["intermediate-crl-unknown"]["level"] == "warning"  # no server runs
    assert codes["replica-silent"]["message"].startswith("replica gonegonegone")
    crls = {c["issuer"]: c for c in report["crls"]}
    assert crls["root"]["number"] == 1
    assert crls["root"]["age_seconds"] >= 3 * 86400 - 60
    # soon, later and the successor of "renewed"; not "renewed" itself (it has a successor)
    assert report["expiring"] == {"7d": 1, "30d": 3}
    assert report["pending_requests"]["count"] == 1
    assert report["database"]["bytes"] > 0
    assert [r["host"] for r in report["replicas"]] == ["ca-1", "ca-2"]

    table = cli("ca", "status", "--dir", folder)
    assert table.exit_code == 1
    text = table.stdout
    for expected in ("CA certificates", "CRLs", "pending requests", "Replicas", "ca-2"):
        assert expected in text
    assert "certificates ending within 7 days  │ 1" in text
    lines = text.splitlines()
    assert any(line.startswith("error: the root CRL at ") for line in lines)
    assert any(
        line.startswith("warning: the active intermediate CA certificate") and "in 19 days" in line
        for line in lines
    )

    # Nothing answers on the CA's URL: every URL a leaf would name fails, with its fix.
    doctor = cli("ca", "doctor", "--dir", folder)
    assert doctor.exit_code == 1
    unreachable = [
        line for line in doctor.stdout.splitlines() if "in the certificates it issues" in line
    ]
    assert len(unreachable) == 3, doctor.stdout
    assert all(line.startswith("error: ") and "not reachable" in line for line in unreachable)
    assert all("(fix: start 'ostiary ca serve'" in line for line in unreachable)


def test_status_of_a_healthy_ca_exits_zero(cli: CLI, tmp_path: Path) -> None:
    paths = CAPaths(tmp_path / "fresh")
    # No url: the issuing CA's CRL is looked for where 'ca serve' puts it, its plain-HTTP
    # listener (here a closed port: the server is not running).
    port = _closed_port()
    config = CAConfig(name="Fresh", http_address=f"127.0.0.1:{port}")
    material = init_ca_folder(paths, config, PASSWORD, now=datetime.now(UTC))
    migrate(material.database_url)
    store = Store.from_url(material.database_url)
    try:
        signer = material.load_root_signer(PASSWORD)
        publish_root_crl(material, store, signer, now=datetime.now(UTC), actor="test")
        signer.close()
    finally:
        store.dispose()
    result = cli("ca", "status", "--dir", paths.root, "--format", "json")
    report = json.loads(result.stdout)
    assert result.exit_code == 0, report["findings"]
    # Only a warning: the issuing CA's CRL is not reachable while the server is stopped.
    assert [f["code"] for f in report["findings"]] == ["intermediate-crl-unknown"]
    assert f"http://127.0.0.1:{port}/crl: not reachable" in report["findings"][0]["message"]
    assert "status" in cli("ca", "--help").stdout
    help_text = " ".join(cli("ca", "status", "--help").stdout.split())
    assert "Exit status: 1 when a finding is an error" in help_text


@pytest.mark.parametrize(
    ("settings", "base"),
    [
        pytest.param({}, "http://127.0.0.1:8080", id="nothing-set"),
        pytest.param({"address": "[::1]:9443"}, "http://[::1]:8080", id="ipv6-address"),
        pytest.param({"http_address": "127.0.0.1:9080"}, "http://127.0.0.1:9080", id="http"),
        pytest.param({"url": "http://ca.example:80/"}, "http://ca.example:80", id="url"),
    ],
)
def test_status_looks_for_the_issuing_crl_where_ca_serve_publishes_it(
    tmp_path: Path, settings: dict[str, str], base: str
) -> None:
    """With no url set (a CA made by the quick start), the CRL is where 'ca serve' puts it:
    the plain-HTTP listener it takes by default, not "the CA has no URL"."""
    paths = CAPaths(tmp_path / "ca")
    config = CAConfig(name="Plain", **settings)  # type: ignore[arg-type]
    material = init_ca_folder(paths, config, PASSWORD, now=datetime.now(UTC))
    migrate(material.database_url)
    asked: list[str] = []

    def fetch(issuer: str, url: str) -> CrlState:
        asked.append(url)
        return CrlState(issuer, url, problem="not reachable: test")

    store = Store.from_url(material.database_url)
    try:
        collect_status(paths, material.config, store, now=datetime.now(UTC), fetch=fetch)
    finally:
        store.dispose()
    assert asked == [f"{base}/crl"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_doctor_finds_a_loose_key_an_https_url_and_a_short_intermediate(
    cli: CLI, tmp_path: Path, database_url: str
) -> None:
    material = make_ageing_ca(tmp_path / "ca", None, "https://ca.example.test")
    material.paths.intermediate_key.chmod(0o644)
    result = cli("ca", "doctor", "--dir", material.paths.root)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    key_line = f"error: key file {material.paths.intermediate_key} is 0644"
    assert any(line.startswith(key_line) and "chmod 600" in line for line in lines), lines
    https = [line for line in lines if "https://ca.example.test/crl" in line]
    assert len(https) == 1 and https[0].startswith("warning: CRL URL")
    assert "--http-address" in https[0]
    short = [line for line in lines if "max_lifetime" in line]
    assert len(short) == 1 and short[0].startswith("error: the active intermediate CA")
    assert "ostiary ca intermediate rotate" in short[0]
    assert "sooner than the 30-day max_lifetime" in short[0]
    assert "clock skew: n/a (SQLite" in result.stdout

    material.paths.intermediate_key.chmod(0o600)
    again = cli("ca", "doctor", "--dir", material.paths.root).stdout
    assert "0644" not in again
    assert "ok: file modes:" in again


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_doctor_compares_clocks_and_versions_on_postgresql(database_url: str) -> None:
    migrate(database_url)
    store = Store.from_url(database_url)
    now = datetime.now(UTC)
    try:
        [ok] = check_clock(store)
        assert ok.level is Level.OK and "clock skew against the database" in ok.message
        [skewed] = check_clock(store, now=lambda: datetime.now(UTC) + timedelta(seconds=60))
        assert skewed.level is Level.ERROR and "ahead of the database" in skewed.message
        with store.transaction() as session:
            replicas = ReplicaRepository(session)
            replicas.beat("a" * 32, host="ca-1", version="0.1.0", now=now)
            replicas.beat("b" * 32, host="ca-2", version="0.1.0", now=now)
        [same] = check_replicas(store, now=now)
        assert same.level is Level.OK and "2 replicas running" in same.message
        with store.transaction() as session:
            ReplicaRepository(session).beat("c" * 32, host="ca-3", version="0.2.0", now=now)
        [mixed] = check_replicas(store, now=now)
        assert mixed.level is Level.ERROR
        assert "ca-3 (cccccccc): 0.2.0" in mixed.message
    finally:
        store.dispose()


def test_server_warns_once_a_day_per_threshold_and_beats(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    sqlite = database_url.startswith("sqlite")
    material = make_ageing_ca(tmp_path / "ca", None if sqlite else database_url, "http://x.test")
    store = Store.from_url(material.database_url)
    moment = [datetime.now(UTC)]
    try:
        watch = HealthWatch(Authority(material, store), clock=lambda: moment[0])
        caplog.set_level(logging.WARNING, logger="ostiary.health")
        first = watch.check()
        assert [f.code for f in first] == ["intermediate-expires-within-30d"]
        assert watch.check() == []  # the same day: not again
        moment[0] += timedelta(days=1)
        assert [f.code for f in watch.check()] == ["intermediate-expires-within-30d"]
        moment[0] += timedelta(days=12)  # 7 days left: the next threshold
        assert [f.code for f in watch.check()] == ["intermediate-expires-within-7d"]
        warnings = [r for r in caplog.records if r.name == "ostiary.health"]
        assert len(warnings) == 3 and all(r.levelno == logging.WARNING for r in warnings)
        # Still the issuing one once expired (its state says "expired"): an error, not silence.
        moment[0] = material.intermediate.not_valid_after_utc + timedelta(hours=1)
        assert [f.code for f in watch.check()] == ["intermediate-expired"]

        watch.beat()
        with store.transaction(read_only=True) as session:
            [row] = ReplicaRepository(session).all()
        assert row.instance_id == watch.instance_id and row.version == watch.version
        watch.stop()  # a clean stop leaves no row
        with store.transaction(read_only=True) as session:
            assert ReplicaRepository(session).all() == []
    finally:
        store.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_restored_ca_lists_no_replicas_of_the_original(
    cli: CLI, tmp_path: Path, database_url: str
) -> None:
    material = make_ageing_ca(tmp_path / "ca", None, "http://x.test")
    store = Store.from_url(material.database_url)
    try:
        with store.transaction() as session:
            ReplicaRepository(session).beat(
                "a" * 32, host="old", version="0.1.0", now=datetime.now(UTC)
            )
    finally:
        store.dispose()
    archive_password = tmp_path / "archive-password"
    archive_password.write_text("an archive password, long enough\n")
    archive = tmp_path / "ca.backup"
    cli.ok(
        "ca",
        "backup",
        "--dir",
        material.paths.root,
        "--out",
        archive,
        "--password-file",
        archive_password,
    )
    restored = tmp_path / "restored"
    cli.ok("ca", "restore", archive, "--dir", restored, "--password-file", archive_password)
    original = json.loads(
        cli("ca", "status", "--dir", material.paths.root, "--format", "json").stdout
    )
    assert [r["host"] for r in original["replicas"]] == ["old"]
    report = json.loads(cli("ca", "status", "--dir", restored, "--format", "json").stdout)
    assert report["replicas"] == []


def _scrape(collector: HealthCollector) -> dict[str, list[dict[str, str]]]:
    """The label sets of each family :class:`HealthCollector` gives, read back by the
    Prometheus text parser.
    """
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        family.name: [sample.labels for sample in family.samples]
        for family in text_string_to_metric_families(text)
    }


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_after_a_rotation_the_active_and_retiring_intermediates_are_watched(
    cli: CLI, tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    base = f"http://127.0.0.1:{_closed_port()}"
    material = make_ageing_ca(tmp_path / "ca", None, base)
    folder = material.paths.root
    old = material.intermediate
    old_id = key_id_hex(old)
    store = Store.from_url(material.database_url)
    moment = [datetime.now(UTC)]
    fetched: list[str] = []

    def fetch(issuer: str, url: str) -> CrlState:  # the real fetch, noting where it went
        fetched.append(url)
        return fetch_crl(issuer, url)

    def intermediates(report: dict[str, Any]) -> list[tuple[str, str]]:
        return [
            (c["key_id"], c["state"])
            for c in report["ca_certificates"]
            if c["role"] == "intermediate"
        ]

    def expiring(findings: list[dict[str, Any]]) -> list[str]:
        return [f["message"] for f in findings if f["code"].startswith("intermediate-expire")]

    def series(labels: list[dict[str, str]]) -> set[tuple[str, str]]:
        return {(s["role"], s["state"]) for s in labels}

    try:
        authority = Authority(material, store)  # started before the rotation, as a server
        issue(authority, "old-leaf", timedelta(days=3))  # keeps the old one retiring
        watch = HealthWatch(authority, clock=lambda: moment[0])
        collector = HealthCollector(authority, base, clock=lambda: moment[0], fetch=fetch)
        signer = material.load_root_signer(PASSWORD)
        try:
            new = rotate_intermediate(
                material, store, signer, key_type=material.config.key_type,
                password=PASSWORD, now=moment[0], actor="test",
            )  # fmt: skip
        finally:
            signer.close()
        new_id = key_id_hex(new)

        report = json.loads(cli("ca", "status", "--dir", folder, "--format", "json").stdout)
        assert intermediates(report) == [(new_id, "active"), (old_id, "retiring")]
        paths = {c["key_id"]: c["crl_path"] for c in report["ca_certificates"]}
        assert paths[new_id] == f"/crl/{new_id}" and paths[old_id] == "/crl"
        sources = {c["key_id"]: c["source"] for c in report["crls"]}
        assert sources[new_id] == f"{base}/crl/{new_id}" and sources[old_id] == f"{base}/crl"
        # The old one ends in 20 days and still answers for its leaf: warned about.
        [warning] = expiring(report["findings"])
        assert warning.startswith("the retiring intermediate CA certificate")
        assert old.subject.rfc4514_string() in warning
        table = cli("ca", "status", "--dir", folder).stdout
        assert "active" in table and "retiring" in table

        caplog.set_level(logging.WARNING, logger="ostiary.health")
        [logged] = watch.check()
        assert logged.code == "intermediate-expires-within-30d"
        assert old.subject.rfc4514_string() in logged.message
        families = _scrape(collector)
        assert series(families["ostiary_ca_certificate_seconds_left"]) == {
            ("root", ""),
            ("intermediate", "active"),
            ("intermediate", "retiring"),
        }
        assert set(fetched) == {f"{base}/crl", f"{base}/crl/{new_id}"}

        # The old one revoked: listed with its state, warned about and scraped nowhere.
        revoke_intermediate(
            material, store, fingerprint_sha256(old),
            reason=x509.ReasonFlags.superseded, now=moment[0], actor="test",
        )  # fmt: skip
        report = json.loads(cli("ca", "status", "--dir", folder, "--format", "json").stdout)
        assert intermediates(report) == [(new_id, "active"), (old_id, "revoked")]
        assert expiring(report["findings"]) == []
        assert old_id not in {c["key_id"] for c in report["crls"]}
        moment[0] += timedelta(days=1)
        assert watch.check() == []
        families = _scrape(collector)
        assert series(families["ostiary_ca_certificate_seconds_left"]) == {
            ("root", ""),
            ("intermediate", "active"),
        }

        # Years on, the active one nears its end: the warning is about it.
        moment[0] = new.not_valid_after_utc - timedelta(days=20)
        warned = [f for f in watch.check() if f.code.startswith("intermediate-")]
        assert [f.code for f in warned] == ["intermediate-expires-within-30d"]
        assert warned[0].message.startswith("the active intermediate CA certificate")
        assert new.subject.rfc4514_string() in warned[0].message
    finally:
        store.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_database_that_cannot_be_read_stops_neither_the_watch_nor_the_scrape(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    material = make_ageing_ca(tmp_path / "ca", None, "http://x.test")
    store = Store.from_url(material.database_url)
    try:
        authority = Authority(material, store)
        with store.transaction() as session:  # the states are read from here at each check
            session.execute(text("DROP TABLE ca_issuers"))
        caplog.set_level(logging.WARNING)
        HealthWatch(authority)._tick()  # the watch thread's step: logs, does not raise
        assert "the CA certificates could not be checked" in caplog.text
        assert _scrape(HealthCollector(authority, "http://x.test")) == {}
        assert "could not be read for /metrics" in caplog.text
    finally:
        store.dispose()
