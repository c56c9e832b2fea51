"""Slow-header (slowloris) clients at the gateway: each sends its request head a line at a
time, which keeps the idle timer from firing; the gateway cuts them off after
``HEAD_TIMEOUT`` while a legitimate client's request still goes through.

Worth its ~15 s: nothing else holds a head open past the deadline.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from ostiary.gateway.http import HEAD_TIMEOUT
from ostiary.gateway.server import Gateway
from ostiary.tls import client_context
from tests.abuse import slow_header_cut
from tests.gateway.conftest import CA, EchoUpstream, gateway_config, run_gateway

SLOW = 50


@pytest.fixture
def gateway(ca: CA, upstream: EchoUpstream) -> Iterator[Gateway]:
    with run_gateway(gateway_config(ca, f"http://127.0.0.1:{upstream.port}")) as gateway:
        yield gateway


def test_slow_header_clients_are_cut_off_and_others_served(ca: CA, gateway: Gateway) -> None:
    bob = ca.issue("bob", ("email:bob@example.com",))
    context = client_context([ca.authority.ca.root], identity=bob.identity)
    with contextlib.ExitStack() as stack:
        slow = []
        for _ in range(SLOW):
            raw = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
            tls = stack.enter_context(context.wrap_socket(raw, server_hostname="127.0.0.1"))
            tls.sendall(b"GET / HTTP/1.1\r\nHost: door.example\r\n")
            tls.settimeout(0.001)
            slow.append(tls)
        started = time.monotonic()
        with ca.client(bob, gateway.port) as client:
            assert client.get("/meanwhile").status_code == 200
        while slow and time.monotonic() - started < HEAD_TIMEOUT + 30:
            slow = [tls for tls in slow if not slow_header_cut(tls)]
            time.sleep(1)
        cut_after = time.monotonic() - started
    assert slow == []
    assert cut_after >= HEAD_TIMEOUT - 1
