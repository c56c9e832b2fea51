"""Connections to the HTTPS listener that never start TLS: a client that connects and sends
nothing, or half a ClientHello, is cut after ``HANDSHAKE_TIMEOUT`` and meanwhile counts
toward ``--max-connections`` (a connection past the cap is closed before any TLS); once they
are cut, a legitimate client is served.

Under uvicorn's own listener the handshake had the event loop's 60 s and a connection in it
counted toward nothing. Worth its ~13 s: the bound is the 10 s handshake timeout of the real
``ca serve`` (uvloop).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ostiary.authority.folder import CAMaterial
from ostiary.store.database import sqlite_url_for
from ostiary.tls import client_context
from ostiary.tls_accept import HANDSHAKE_TIMEOUT
from tests.abuse import handshake_refused, open_stalled, wait_until_closed
from tests.server.conftest import Provisioners
from tests.server.processes import CAFolder, ServeProcess, make_ca_folder, start_serve

CAP = 20


@pytest.fixture
def server(
    ca_material: CAMaterial, provisioners: Provisioners, tmp_path: Path
) -> Iterator[tuple[CAFolder, ServeProcess]]:
    ca = make_ca_folder(
        ca_material, provisioners, sqlite_url_for(tmp_path / "ostiary.db"), tmp_path / "ca"
    )
    process = start_serve(ca, tmp_path / "serve.log", options=["--max-connections", str(CAP)])
    try:
        yield ca, process
    finally:
        process.stop()


def test_connections_that_never_finish_tls_are_cut_and_count_toward_the_cap(
    server: tuple[CAFolder, ServeProcess],
) -> None:
    ca, process = server
    where = urlsplit(process.https_url)
    address = (where.hostname or "127.0.0.1", where.port or 443)
    context = client_context([ca.root])
    with contextlib.ExitStack() as stack:
        started = time.monotonic()
        stalled = open_stalled(stack, address, CAP)
        time.sleep(0.5)  # all accepted
        assert handshake_refused(address, context), "a connection past the cap is closed"
        still, cut_after = wait_until_closed(stalled, started, HANDSHAKE_TIMEOUT + 8)
    assert still == [], f"{len(still)} of {CAP} still open after {cut_after:.1f} s"
    assert cut_after >= HANDSHAKE_TIMEOUT - 1
    with process.client() as client:  # the slots are free again
        assert client.get("/health").status_code == 200
