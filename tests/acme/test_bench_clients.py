"""bench/acme_clients.py times real certbot and lego runs: each run a certificate, or a
failure counted and said, never a figure for a run that got nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from tests.acme.conftest import AcmeServer
from tests.conftest import require_tool

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
import acme_clients  # bench/acme_clients.py
from acme_servers import Server, server_names  # bench/acme_servers.py

pytestmark = pytest.mark.slow


def _server(acme: AcmeServer, root: Path | None = None) -> Server:
    return Server("ostiary", acme.directory(), root or acme.root_file, pid=0)


@pytest.mark.parametrize("client", ["certbot", "lego"])
def test_each_run_is_a_certificate_and_the_first_is_reported_apart(
    own_acme_server: AcmeServer, tmp_path: Path, client: str
) -> None:
    require_tool(client)
    row, failure = acme_clients.time_client(
        _server(own_acme_server), client, 2, tmp_path / client, port=own_acme_server.http_port
    )
    assert failure is None
    assert (row.certificates, row.failed) == (2, 0)
    assert row.first_s is not None and row.first_s > 0
    assert row.median_s is not None and row.median_s == row.max_s  # one run after the first
    issued = list((tmp_path / client).rglob("*.crt" if client == "lego" else "cert*.pem"))
    assert issued, "the client kept no certificate"


def test_a_failed_run_is_counted_and_said(own_acme_server: AcmeServer, tmp_path: Path) -> None:
    require_tool("lego")
    wrong_root = tmp_path / "not-a-root.pem"  # lego refuses to start with it
    wrong_root.write_text("not a certificate\n")
    row, failure = acme_clients.time_client(
        _server(own_acme_server, wrong_root),
        "lego",
        1,
        tmp_path / "lego",
        port=own_acme_server.http_port,
    )
    assert (row.certificates, row.failed) == (0, 1)
    assert row.first_s is None and row.median_s is None
    assert failure is not None and failure.startswith("lego exit")


def test_servers_are_named_from_the_bench_s_list() -> None:
    assert server_names("ostiary, pebble") == ["ostiary", "pebble"]
    with pytest.raises(argparse.ArgumentTypeError, match="unknown server nosuch: choose from"):
        server_names("ostiary,nosuch")
    with pytest.raises(argparse.ArgumentTypeError, match="unknown server"):
        server_names(",")
