"""Helpers of the connection-abuse tests of ``ca serve`` and the gateway: clients that never
finish the TLS handshake (silent ones, and ones that send half a ClientHello), slow-header
clients, a process's resident memory, and enough descriptors for thousands of connections.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import resource
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest


def half_client_hello() -> bytes:
    """The first half of a real TLS ClientHello (a record the server must wait on)."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="stall.example")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    return hello[: len(hello) // 2]


def open_stalled(
    stack: contextlib.ExitStack, address: tuple[str, int], count: int
) -> list[socket.socket]:
    """``count`` connections: half send nothing, half send half a ClientHello."""
    half = half_client_hello()
    stalled = []
    for number in range(count):
        raw = stack.enter_context(socket.create_connection(address, timeout=10))
        if number % 2:
            raw.sendall(half)
        raw.setblocking(False)
        stalled.append(raw)
    return stalled


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server has closed this connection (nothing else is ever sent on it)."""
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


def wait_until_closed(
    stalled: list[socket.socket], since: float, within: float
) -> tuple[list[socket.socket], float]:
    """Poll until the server has closed every one, or ``within`` seconds after ``since`` (a
    ``time.monotonic()``): those still open, and the seconds from ``since`` to the last close.
    """
    still = list(stalled)
    while still and time.monotonic() - since < within:
        time.sleep(0.25)
        still = [sock for sock in still if not closed_by_peer(sock)]
    return still, time.monotonic() - since


def handshake_refused(address: tuple[str, int], context: ssl.SSLContext) -> bool:
    """Whether a new TLS connection is closed without a handshake (past a cap)."""
    raw = socket.create_connection(address, timeout=10)
    try:
        with context.wrap_socket(raw, server_hostname=address[0]):
            return False
    except (ssl.SSLError, ConnectionError, TimeoutError):
        return True
    finally:
        raw.close()


def slow_header_cut(tls: ssl.SSLSocket) -> bool:
    """Send one more header line (a slow client's next byte); whether the server has closed
    the connection. ``tls`` has a tiny timeout, so that an open one answers at once.
    """
    try:
        tls.sendall(b"X-Slow: 1\r\n")
        return tls.recv(1) == b""
    except (TimeoutError, BlockingIOError, ssl.SSLWantReadError):
        return False
    except OSError:
        return True


def rss_mb(pid: int) -> float:
    """The resident memory of process ``pid``, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def enough_descriptors(needed: int) -> None:
    """Raise this process's open-files limit to ``needed`` (a server started from it
    inherits it); skip the test where the hard limit is lower.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"ulimit -n is {soft} (hard {hard}): {needed} descriptors are needed")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def answers_until(
    send: Callable[[], httpx.Response], stop: int, *, most: int, threads: int = 4
) -> list[httpx.Response]:
    """The answers of ``send()`` called from ``threads`` threads at once until one has status
    ``stop`` or ``most`` calls were made, in the order they came back.

    For a per-address limit that refills while it is drained (the refused-credential one
    gives 5 a second back): the budget is spent once requests outrun the refill, which a
    loaded machine's one-at-a-time requests may barely do.
    """
    seen: list[httpx.Response] = []
    lock = threading.Lock()
    done = threading.Event()

    def worker() -> None:
        while not done.is_set():
            answer = send()
            with lock:
                seen.append(answer)
                if answer.status_code == stop or len(seen) >= most:
                    done.set()

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(worker) for _ in range(threads)]:
            future.result()
    return seen
