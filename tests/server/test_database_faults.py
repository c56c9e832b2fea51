"""PostgreSQL faults under 32-way issuance load against ``ca serve``: the postmaster killed
with -9 and restarted, the cluster stopped for a while, connections reset, delayed and left
half-open by a fault proxy (:mod:`tests.server.fault_proxy`) between the server and the
database.

In every case: each answer is a certificate (201) or a 503 problem with ``Retry-After``,
never a 500 and never a hang past the clients' timeout; every certificate a client received
is in the database; the server issues again by itself once the database is back; and the
audit chain verifies afterwards. Worth its ~110 s (a half-open database must outlast the
clients' timeout): no other test meets these states.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy import select

from ostiary.authority.folder import CAMaterial
from ostiary.store import AuditLog, CertificateRecord, Store
from tests.figures import record
from tests.server.conftest import Provisioners, make_csr
from tests.server.fault_proxy import FaultProxy
from tests.server.pg_cluster import Cluster, own_cluster
from tests.server.processes import CAFolder, ServeProcess, make_ca_folder, start_serve

pytestmark = pytest.mark.slow  # its own cluster: needs the postgresql package, not a DSN

CLIENTS = 32
#: The clients' request timeout: the server must answer (503) before it. POST /sign's write
#: fails at store.WRITE_DEADLINE (20 s) from the request's start, instead of waiting out a
#: stuck batch and then its own (~36 s before, when clients needed 60 s); a provisioner read
#: before it (pool wait, connect, a round trip: at most ~21 s) only uses up that deadline.
#: The longest answer is recorded (12.9 and 16.1 s in two runs under the half-open connection).
REQUEST_TIMEOUT = 25.0
#: How long the cluster stays stopped. Longer than the server's connect timeout and pool
#: wait (3 and 10 s), so a request meets every state of a database that is down (refused
#: connects, broken pooled connections, waits for the pool); longer changes nothing more.
STOPPED_SECONDS = 12.0


@dataclass
class Outcomes:
    """What the load's clients got."""

    certificates: list[x509.Certificate] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    bad: list[str] = field(default_factory=list)  # anything but 201 or a proper 503
    spans: list[tuple[float, float]] = field(default_factory=list)  # (sent, answered)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    def met(self, start: float, end: float) -> int:
        """Requests refused, or in flight across the whole of ``start``..``end``."""
        with self.lock:
            spanning = sum(1 for sent, answered in self.spans if sent < start and answered > end)
            return spanning + self.statuses.get(503, 0)

    def issued(self) -> int:
        with self.lock:
            return len(self.certificates)


@dataclass(frozen=True)
class Setup:
    cluster: Cluster
    proxy: FaultProxy
    ca: CAFolder
    server: ServeProcess
    provisioners: Provisioners


@pytest.fixture(scope="module")
def setup(
    ca_material: CAMaterial,
    provisioners: Provisioners,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Setup]:
    folder = tmp_path_factory.mktemp("db-faults")
    with own_cluster() as cluster:
        proxy = FaultProxy(cluster.port)
        ca = make_ca_folder(ca_material, provisioners, cluster.url(), folder / "ca")
        through_proxy = CAFolder(
            ca.paths, ca.password_file, cluster.url(proxy.port), ca.root, ca.intermediate
        )
        config = ca.paths.config.read_text().replace(cluster.url(), cluster.url(proxy.port))
        ca.paths.config.write_text(config)
        server = start_serve(through_proxy, folder / "serve.log")
        try:
            yield Setup(cluster, proxy, ca, server, provisioners)
        finally:
            server.stop()
            proxy.close()


def _sign(setup: Setup, client: httpx.Client, subject: str) -> httpx.Response:
    csr, _ = make_csr(subject, [subject])
    token = setup.provisioners.ops.mint_sign_token(
        setup.provisioners.ops_key, subject, ca=setup.ca.identity, now=datetime.now(UTC)
    )
    return client.post("/sign", json={"csr": csr, "token": token})


def _check(answer: httpx.Response, outcomes: Outcomes) -> None:
    with outcomes.lock:
        outcomes.statuses[answer.status_code] = outcomes.statuses.get(answer.status_code, 0) + 1
        if answer.status_code == 201:
            pem = answer.json()["certificate"].encode()
            outcomes.certificates.append(x509.load_pem_x509_certificate(pem))
            return
        proper = (
            answer.status_code == 503
            and answer.headers.get("content-type", "").startswith("application/problem+json")
            and answer.headers.get("retry-after", "").isdigit()
        )
        if not proper:
            outcomes.bad.append(f"{answer.status_code} {answer.text[:300]}")


@contextmanager
def load(setup: Setup, name: str) -> Iterator[Outcomes]:
    """``CLIENTS`` threads issuing through ``POST /sign`` until the block ends."""
    outcomes = Outcomes()
    stop = threading.Event()

    def work(worker: int) -> None:
        count = 0
        with setup.server.client() as client:
            client.timeout = httpx.Timeout(REQUEST_TIMEOUT)
            while not stop.is_set():
                count += 1
                sent = time.monotonic()
                try:
                    answer = _sign(setup, client, f"{name}-{worker}-{count}.example.com")
                except httpx.TransportError as error:  # a hang past the timeout, or a reset
                    with outcomes.lock:
                        outcomes.bad.append(f"{type(error).__name__}: {error}")
                    continue
                with outcomes.lock:
                    outcomes.spans.append((sent, time.monotonic()))
                _check(answer, outcomes)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        yield outcomes
    finally:
        stop.set()
        for thread in threads:
            thread.join(REQUEST_TIMEOUT * 2)


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _survived(setup: Setup, outcomes: Outcomes, inject: Callable[[], None]) -> None:
    """Issue under load; ``inject`` the fault and heal it; then the server issues again.
    The fault was met: requests were refused, or in flight all through it.
    """
    _wait_for(lambda: outcomes.issued() >= CLIENTS, "issuance before the fault")
    start = time.monotonic()
    inject()
    end = time.monotonic()
    after = outcomes.issued()
    _wait_for(lambda: outcomes.issued() >= after + CLIENTS, "issuance after the fault")
    assert outcomes.met(start, end) > 0


def _verify(setup: Setup, outcomes: Outcomes, case: str) -> None:
    assert outcomes.bad == []
    store = Store.from_url(setup.cluster.url())
    try:
        with store.transaction(read_only=True) as session:
            assert AuditLog(session).verify().ok
            recorded = set(session.scalars(select(CertificateRecord.fingerprint_sha256)))
    finally:
        store.dispose()
    received = [c.fingerprint(hashes.SHA256()).hex() for c in outcomes.certificates]
    lost = [f for f in received if f not in recorded]
    record(
        "database-fault",
        backend="postgresql",
        case=case,
        requests=outcomes.requests,
        issued=len(received),
        refused_503=outcomes.statuses.get(503, 0),
        other_5xx=sum(n for s, n in outcomes.statuses.items() if s >= 500 and s != 503),
        lost=len(lost),
        longest_s=round(max(answered - sent for sent, answered in outcomes.spans), 1),
    )
    assert lost == []


def test_postmaster_killed_with_9_then_restarted(setup: Setup) -> None:
    case = "postmaster killed with -9, restarted 5 s later"

    def fault() -> None:
        setup.cluster.kill()
        time.sleep(5)  # as long as a supervisor takes to notice and restart it
        setup.cluster.start()

    with load(setup, "kill9") as outcomes:
        _survived(setup, outcomes, fault)
    _verify(setup, outcomes, case)


def test_cluster_stopped_for_a_while(setup: Setup) -> None:
    case = f"cluster stopped for {STOPPED_SECONDS:g} s"

    def fault() -> None:
        setup.cluster.stop()
        time.sleep(STOPPED_SECONDS)
        setup.cluster.start()

    with load(setup, "stop") as outcomes:
        _survived(setup, outcomes, fault)
    _verify(setup, outcomes, case)


def test_connections_reset_delayed_and_half_open(setup: Setup) -> None:
    case = f"connections reset 3 s, delayed 0.2 s/chunk 5 s, half-open {REQUEST_TIMEOUT + 5:g} s"
    proxy = setup.proxy

    def fault() -> None:
        proxy.mode = "drop"
        time.sleep(3)
        proxy.mode = "pass"
        proxy.delay = 0.2
        time.sleep(5)
        proxy.delay = 0.0
        proxy.mode = "half-open"
        # Past the clients' timeout: without a deadline of its own, the server would leave
        # them waiting for the database until it came back.
        time.sleep(REQUEST_TIMEOUT + 5)
        proxy.mode = "pass"

    with load(setup, "proxy") as outcomes:
        _survived(setup, outcomes, fault)
    _verify(setup, outcomes, case)
