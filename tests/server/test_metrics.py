"""``/metrics`` scraped from a real ``ca serve --workers 2 --metrics-address``, parsed by
prometheus_client's own text parser, after known issuances, refusals and rate-limited
requests; and ``ca doctor`` against the same running CA (its URLs answer).

One server for the module (two worker processes: the figures must be the sum of both).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from ostiary.authority.folder import CAMaterial
from ostiary.authority.ssh import SSHAuthority, SSHAuthorization
from ostiary.authority.ssh_keys import init_ssh_ca
from ostiary.cli.main import app
from ostiary.config import dump_config
from ostiary.core.ca import key_id_hex
from ostiary.core.errors import TokenReused
from ostiary.core.keys import KeyType
from ostiary.server.metrics import ServerMetrics
from ostiary.ssh import SSHCertificateType, load_ssh_public_key_line
from ostiary.store import Store, TokenSpend, migrate, sqlite_url_for
from tests.server.conftest import PASSWORD, Provisioners, make_csr, material_for
from tests.server.processes import CAFolder, ServeProcess, make_ca_folder, start_serve

_METRICS_URL = re.compile(r"Prometheus metrics:\s+(\S+)")
ISSUED = 4


@dataclass
class Scraped:
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def with_name(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        return {labels: v for (n, labels), v in self.samples.items() if n == name}


def scrape(url: str) -> Scraped:
    text = httpx.get(url, timeout=30).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Scraped(samples)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def served(
    ca_material: CAMaterial,
    provisioners: Provisioners,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[CAFolder, ServeProcess, str]]:
    """``ca serve --workers 2 --metrics-address 127.0.0.1:0``, its certificates pointing at
    its plain-HTTP port (so that ``ca doctor`` can reach every URL).
    """
    folder = tmp_path_factory.mktemp("metrics")
    ca = make_ca_folder(
        ca_material, provisioners, sqlite_url_for(folder / "ostiary.db"), folder / "ca"
    )
    port = _free_port()
    config = ca_material.config.model_copy(
        update={"database_url": ca.database_url, "url": f"http://127.0.0.1:{port}"}
    )
    ca.paths.config.write_text(dump_config(config), encoding="utf-8")
    options = ["--http-address", f"127.0.0.1:{port}", "--workers", "2"]
    options += ["--metrics-address", "127.0.0.1:0"]
    server = start_serve(ca, folder / "serve.log", options=options)
    try:
        deadline = time.monotonic() + 60
        while not (found := _METRICS_URL.search(server.log.read_text(errors="replace"))):
            assert time.monotonic() < deadline, server.log.read_text(errors="replace")
            time.sleep(0.05)
        yield ca, server, found.group(1)
    finally:
        server.stop()


def test_metrics_count_what_both_workers_did(
    served: tuple[CAFolder, ServeProcess, str], provisioners: Provisioners
) -> None:
    ca, server, metrics_url = served
    before = scrape(metrics_url)

    def token(subject: str) -> str:
        return provisioners.ops.mint_sign_token(
            provisioners.ops_key, subject, ca=ca.identity, now=datetime.now(UTC)
        )

    for index in range(ISSUED):  # a connection each: the kernel spreads them over workers
        with server.client() as client:
            csr, _ = make_csr(f"device-{index}")
            answer = client.post("/sign", json={"csr": csr, "token": token(f"device-{index}")})
            assert answer.status_code == 201, answer.text
    with server.client() as client:
        csr, _ = make_csr("mallory")
        refused = client.post("/sign", json={"csr": csr, "token": token("alice")})
        assert refused.status_code == 403, refused.text
        forged = client.post("/sign", json={"csr": csr, "token": "e30.e30.c2ln"})
        assert forged.status_code in (400, 401), forged.text
        forged_code = forged.json()["type"].rsplit(":", 1)[1]
        statuses = [client.post("/attestation/nonce").status_code for _ in range(70)]
        unmatched = client.get("/no/such/path/31337")
        assert unmatched.status_code == 404
    assert 429 in statuses
    limited = statuses.count(429)

    after = scrape(metrics_url)

    def grew(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    issued = "ostiary_certificates_issued_total"
    assert grew(issued, provisioner="ops", event="certificate.issued") == ISSUED
    denied = "ostiary_certificates_denied_total"
    assert grew(denied, provisioner="ops", reason="name-not-authorized") == 1
    assert grew(denied, provisioner="-", reason=forged_code) == 1
    latency = "ostiary_http_request_duration_seconds_count"
    assert grew(latency, method="POST", route="/sign") == ISSUED + 2
    responses = "ostiary_http_responses_total"
    assert grew(responses, method="POST", route="/sign", status="201") == ISSUED
    assert grew(responses, method="POST", route="/sign", status="403") == 1
    assert grew(responses, method="POST", route="/attestation/nonce", status="429") == limited
    assert grew(responses, method="GET", route="(unmatched)", status="404") == 1
    assert not any("31337" in value for labels in after.samples for _, value in labels[1])
    refusals = "ostiary_rate_limit_refusals_total"
    assert grew(refusals, limit="attestation nonces") == limited
    assert grew("ostiary_group_commit_batch_size_sum") >= ISSUED
    assert grew("ostiary_group_commit_batch_size_count") >= 1

    now = datetime.now(UTC)
    left = after.with_name("ostiary_ca_certificate_seconds_left")
    by_role = {dict(labels)["role"]: value for labels, value in left.items()}
    assert {dict(labels)["state"] for labels in left} == {"", "active"}  # never rotated
    expected = (ca.intermediate.not_valid_after_utc - now).total_seconds()
    assert abs(by_role["intermediate"] - expected) < 120
    assert by_role["root"] > by_role["intermediate"]
    ages = {dict(k)["issuer"]: v for k, v in after.with_name("ostiary_crl_age_seconds").items()}
    assert 0 <= ages["intermediate"] < 3600
    assert 0 <= ages["root"] < 3600  # made by 'ca serve' at start
    crl_series = after.with_name("ostiary_crl_age_seconds")
    key_ids = {dict(k)["issuer"]: dict(k)["key_id"] for k in crl_series}
    assert key_ids["intermediate"] == key_id_hex(ca.intermediate)
    next_updates = after.with_name("ostiary_crl_next_update_seconds")
    assert all(value > 0 for value in next_updates.values())
    assert httpx.get(metrics_url.replace("/metrics", "/other"), timeout=30).status_code == 404


def test_doctor_reaches_every_url_of_the_running_ca(
    served: tuple[CAFolder, ServeProcess, str],
) -> None:
    ca, _server, _ = served
    result = CliRunner().invoke(app, ["ca", "doctor", "--dir", str(ca.paths.root)])
    assert result.exit_code == 0, result.stdout
    lines = result.stdout.splitlines()
    assert "ok: 3 URLs in certificates answer over plain HTTP" in lines
    assert "ok: 1 replicas running, all version" in result.stdout


def test_a_metrics_address_off_loopback_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from ostiary.cli.main import main; main()",
            "ca",
            "serve",
            "--dir",
            str(tmp_path / "none"),
            "--metrics-address",
            "0.0.0.0:9100",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --metrics-address 0.0.0.0:9100")
    assert "--metrics-allow-remote" in lines[0]


def test_ssh_certificates_and_their_replays_are_counted(
    ca_material: CAMaterial, tmp_path: Path
) -> None:
    """The SSH CA's decisions reach the same counters (no server needed: the listeners)."""
    url = sqlite_url_for(tmp_path / "ostiary.db")
    material = material_for(ca_material, url, tmp_path / "ca")
    migrate(url)
    store = Store.from_url(url)
    try:
        ssh = SSHAuthority(
            init_ssh_ca(material, PASSWORD, KeyType.ED25519), store, clock=lambda: datetime.now(UTC)
        )
        metrics = ServerMetrics()
        metrics.attach_ssh(ssh)
        authorization = SSHAuthorization(
            cert_type=SSHCertificateType.USER,
            principals=("alice",),
            key_id="alice",
            lifetime=timedelta(hours=1),
            provisioner="ops",
        )
        token = TokenSpend("ops", "ssh-token-1", datetime.now(UTC) + timedelta(minutes=5))
        public_key = load_ssh_public_key_line(
            ed25519.Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        )
        ssh.issue(public_key, authorization, actor="test", token=token)
        with pytest.raises(TokenReused):
            ssh.issue(public_key, authorization, actor="test", token=token)
        registry = metrics.registry
        issued = {"provisioner": "ops", "event": "ssh_certificate.issued"}
        assert registry.get_sample_value("ostiary_certificates_issued_total", issued) == 1
        denied = {"provisioner": "ops", "reason": "token-reused"}
        assert registry.get_sample_value("ostiary_certificates_denied_total", denied) == 1
    finally:
        store.dispose()
