"""The listeners under connection abuse, all at once: 2,000 idle connections and 200
slow-header (slowloris) clients on the HTTPS listener, 100 more on the plain-HTTP one, while
a legitimate client still gets its certificate; the slow clients are cut off after the head
deadline; the server's memory stays bounded.

Worth its ~25 s: the head deadline is the one defence against a client that holds a
connection by sending its head a byte at a time, and nothing else exercises it.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ostiary.authority.folder import CAMaterial
from ostiary.server.tls_scope import HEAD_TIMEOUT
from ostiary.store.database import sqlite_url_for
from ostiary.tls import client_context
from tests.abuse import enough_descriptors, rss_mb
from tests.figures import record
from tests.server.conftest import Provisioners, make_csr
from tests.server.processes import CAFolder, ServeProcess, make_ca_folder, start_serve

pytestmark = pytest.mark.slow

IDLE = 2000
SLOW = 200
SLOW_PLAIN = 100
#: The serving process's resident memory may not pass this under the abuse (it is ~120 MB
#: idle here; each open connection costs a few kB).
RSS_BOUND_MB = 400


@pytest.fixture
def server(
    ca_material: CAMaterial, provisioners: Provisioners, tmp_path: Path
) -> Iterator[tuple[CAFolder, ServeProcess]]:
    # The server inherits this process's limit; both sides need a descriptor per connection.
    enough_descriptors(IDLE + SLOW + SLOW_PLAIN + 256)
    ca = make_ca_folder(
        ca_material, provisioners, sqlite_url_for(tmp_path / "ostiary.db"), tmp_path / "ca"
    )
    process = start_serve(ca, tmp_path / "serve.log")
    try:
        yield ca, process
    finally:
        process.stop()


def test_idle_and_slow_header_clients_do_not_stop_issuance(
    server: tuple[CAFolder, ServeProcess], provisioners: Provisioners
) -> None:
    ca, process = server
    where = urlsplit(process.https_url)
    address = (where.hostname or "127.0.0.1", where.port or 443)
    context = client_context([ca.root])
    sockets: list[socket.socket] = []
    with contextlib.ExitStack() as stack:
        for _ in range(IDLE):
            sockets.append(stack.enter_context(socket.create_connection(address, timeout=30)))
        slow: list[socket.socket] = []
        plain = urlsplit(process.http_url)
        for _ in range(SLOW_PLAIN):
            raw = stack.enter_context(
                socket.create_connection((plain.hostname or "", plain.port or 80), timeout=30)
            )
            raw.sendall(b"GET /health HTTP/1.1\r\nHost: ca\r\n")
            slow.append(raw)
        for _ in range(SLOW):
            raw = socket.create_connection(address, timeout=30)
            tls = stack.enter_context(context.wrap_socket(raw, server_hostname=address[0]))
            tls.sendall(b"POST /sign HTTP/1.1\r\nHost: ca\r\n")
            slow.append(tls)
        started = time.monotonic()

        # A legitimate client meanwhile: its certificate.
        with process.client() as client:
            csr, _ = make_csr("legit@example.com")
            token = provisioners.ops.mint_sign_token(
                provisioners.ops_key, "legit@example.com", ca=ca.identity, now=datetime.now(UTC)
            )
            answer = client.post("/sign", json={"csr": csr, "token": token})
        assert answer.status_code == 201, answer.text

        # The slow clients keep dribbling; the server cuts each off after the deadline.
        open_slow = list(slow)
        while open_slow and time.monotonic() - started < HEAD_TIMEOUT + 30:
            still = []
            for tls in open_slow:
                try:
                    tls.sendall(b"X-Slow: 1\r\n")
                    tls.settimeout(0.001)
                    closed = tls.recv(1) == b""
                except (TimeoutError, BlockingIOError, ssl.SSLWantReadError):
                    closed = False
                except OSError:
                    closed = True
                if not closed:
                    still.append(tls)
            open_slow = still
            time.sleep(1)
        cut_after = time.monotonic() - started
        rss = rss_mb(process.process.pid)
    record(
        "abuse",
        listener="HTTPS + plain HTTP",
        idle=IDLE,
        slow=SLOW + SLOW_PLAIN,
        still_open=len(open_slow),
        cut_after_s=round(cut_after, 1),
        rss_mb=round(rss),
        rss_bound_mb=RSS_BOUND_MB,
        legitimate_issued=answer.status_code == 201,
    )
    assert open_slow == []
    assert cut_after >= HEAD_TIMEOUT - 1
    assert rss < RSS_BOUND_MB
