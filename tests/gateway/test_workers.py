"""``ostiary gateway run --workers N``: N processes share the port (SO_REUSEPORT), each
serves, SIGHUP reaches them all, SIGTERM stops them all."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.gateway.conftest import CA, EchoUpstream, free_port, wait_for_port


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(c) for c in text.split()]


def test_workers_share_the_port(ca: CA, upstream: EchoUpstream, tmp_path: Path) -> None:
    alice = ca.issue("alice", ("email:alice@example.com",))
    port, metrics = free_port(), free_port()
    log = (tmp_path / "gateway.log").open("wb")
    gateway = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ostiary"),
            "gateway", "run", "--workers", "2",
            "--listen", f"127.0.0.1:{port}",
            "--upstream", f"http://127.0.0.1:{upstream.port}",
            "--ca-root", str(ca.ca_file),
            "--cert", str(ca.server.cert_file), "--key", str(ca.server.key_file),
            "--metrics-listen", f"127.0.0.1:{metrics}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        # Two spawned workers each import the gateway: on a busy machine that takes a while.
        wait_for_port(port, 60)
        wait_for_port(metrics, 60)
        wait_for_port(metrics + 1, 60)  # one metrics port per worker
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
