"""``ostiary gateway run --workers N``: N processes share the port (SO_REUSEPORT), each
serves, SIGHUP reaches them all, SIGTERM stops them all."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.gateway.conftest import CA, EchoUpstream, free_port, free_ports_in_a_row, wait_for_port


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(c) for c in text.split()]


def two_workers(ca: CA, upstream: EchoUpstream, port: int, metrics: int) -> list[str]:
    return [
        str(Path(sys.executable).parent / "ostiary"),
        "gateway", "run", "--workers", "2",
        "--listen", f"127.0.0.1:{port}",
        "--upstream", f"http://127.0.0.1:{upstream.port}",
        "--ca-root", str(ca.ca_file),
        "--cert", str(ca.server.cert_file), "--key", str(ca.server.key_file),
        "--metrics-listen", f"127.0.0.1:{metrics}",
    ]  # fmt: skip


def test_workers_share_the_port(ca: CA, upstream: EchoUpstream, tmp_path: Path) -> None:
    alice = ca.issue("alice", ("email:alice@example.com",))
    port, metrics = free_port(), free_ports_in_a_row(2)  # one metrics port per worker
    log = (tmp_path / "gateway.log").open("wb")
    gateway = subprocess.Popen(
        two_workers(ca, upstream, port, metrics),
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        # Two spawned workers each import the gateway: on a busy machine that takes a while.
        for each in (port, metrics, metrics + 1):
            try:
                wait_for_port(each, 60)
            except RuntimeError as error:
                raise AssertionError((tmp_path / "gateway.log").read_text()[-3000:]) from error
        workers = [
            child
            for child in children(gateway.pid)
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
        ]
        assert len(workers) == 2
        for _ in range(20):  # new connections, spread by the kernel
            with ca.client(alice, port) as client:
                assert client.get("/").status_code == 200
        accepted = 0
        for metrics_port in (metrics, metrics + 1):
            text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
            values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line[:1] != "#")
            served = int(values["ostiary_gateway_connections_accepted_total"])
            assert served > 0, "each worker takes connections"
            accepted += served
        assert accepted == 20
        gateway.send_signal(signal.SIGHUP)  # reload in every worker; none dies
        time.sleep(0.5)
        assert gateway.poll() is None
        with ca.client(alice, port) as client:
            assert client.get("/").status_code == 200
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(20)
        log.close()
    assert gateway.returncode == 0, (tmp_path / "gateway.log").read_text()
    assert (tmp_path / "gateway.log").read_text().count("reloaded certificate") == 2


def test_a_worker_that_cannot_listen_stops_the_gateway(
    ca: CA, upstream: EchoUpstream, tmp_path: Path
) -> None:
    """Half a gateway is not started: worker 1's metrics port is taken, so all of it exits 1."""
    port, metrics = free_port(), free_ports_in_a_row(2)
    with socket.create_server(("127.0.0.1", metrics + 1)):
        finished = subprocess.run(
            two_workers(ca, upstream, port, metrics), capture_output=True, text=True, timeout=120
        )
    assert finished.returncode == 1, finished.stderr[-2000:]
    assert "worker 1 cannot listen" in finished.stderr
    assert f"{metrics + 1}): address already in use" in finished.stderr.lower()
