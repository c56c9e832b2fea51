"""The gateway's TLS transport (``ostiary.gateway.tls_transport``, pyOpenSSL over the loop's
TCP transport) as clients see it: handshakes that stall or are not TLS are cut and counted,
20 MB go through both ways with flow control, the connection ends with a close_notify either
way (and the session stays resumable when the client just drops it: test_gateway.py), a
reload changes the context for new connections while an open one goes on, and reading
paused by the protocol holds the records until it resumes.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import socket
import ssl
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

from ostiary.gateway.server import Gateway
from ostiary.gateway.tls_transport import TLSTransport, accept_tls
from ostiary.gateway.trust import load
from ostiary.tls import client_context
from tests.gateway.conftest import (
    CA,
    EchoUpstream,
    Issued,
    gateway_config,
    run_gateway,
    served_certificate,
)

SHORT_HANDSHAKE = 1.5
BIG = 20 * 1024 * 1024


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def gateway(ca: CA, upstream: EchoUpstream, request: pytest.FixtureRequest) -> Iterator[Gateway]:
    """On either event loop: the transport runs on the loop's TCP transport."""
    config = gateway_config(
        ca, f"http://127.0.0.1:{upstream.port}", handshake_timeout_seconds=SHORT_HANDSHAKE
    )
    with run_gateway(config, on_uvloop=request.param == "uvloop") as gateway:
        yield gateway


@pytest.fixture(scope="module")
def grace(ca: CA) -> Issued:
    return ca.issue("grace", ("email:grace@example.com",))


def context_for(ca: CA, client: Issued) -> ssl.SSLContext:
    return client_context([ca.authority.ca.root], identity=client.identity)


def connect(ca: CA, client: Issued, port: int) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    # A close without close_notify is an error here, not an end of stream.
    return context_for(ca, client).wrap_socket(
        raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False
    )


def read_answer(tls: ssl.SSLSocket) -> tuple[bytes, bytes]:
    """Head and body of one answer with a content-length."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += tls.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:])
    length = int({name.lower(): value for name, value in fields.items()}[b"content-length"])
    while len(body) < length:
        body += tls.recv(65536)
    return head, body


def closed_by_gateway(raw: socket.socket, within: float) -> bool:
    """True when the gateway closed ``raw`` within ``within`` seconds (reads all it sent)."""
    raw.settimeout(within)
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            if not raw.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


def wait_refused(gateway: Gateway, reason: str, before: int) -> int:
    deadline = time.monotonic() + 5
    while gateway.metrics.refused[reason] == before and time.monotonic() < deadline:
        time.sleep(0.02)
    return gateway.metrics.refused[reason] - before


def test_a_client_that_stops_mid_handshake_is_cut_at_the_timeout(
    ca: CA, gateway: Gateway, grace: Issued
) -> None:
    before = gateway.metrics.refused["handshake"]
    client = context_for(ca, grace).wrap_bio(
        ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="127.0.0.1"
    )
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as raw:
        started = time.monotonic()
        raw.sendall(outgoing.read())  # the ClientHello, then nothing
        assert closed_by_gateway(raw, SHORT_HANDSHAKE + 5)
        assert time.monotonic() - started >= SHORT_HANDSHAKE - 0.3
    assert wait_refused(gateway, "handshake", before) == 1


def test_bytes_that_are_not_tls_are_refused_at_once_and_counted(gateway: Gateway) -> None:
    before = gateway.metrics.refused["handshake"]
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as raw:
        started = time.monotonic()
        raw.sendall(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert closed_by_gateway(raw, SHORT_HANDSHAKE)
        assert time.monotonic() - started < SHORT_HANDSHAKE - 0.5  # an alert, not the timeout
    assert wait_refused(gateway, "handshake", before) == 1


def test_twenty_megabytes_go_up_through_the_proxy(ca: CA, gateway: Gateway, grace: Issued) -> None:
    body = bytes(range(256)) * (BIG // 256)
    with connect(ca, grace, gateway.port) as tls:
        tls.sendall(
            b"POST /upload HTTP/1.1\r\nHost: gw\r\ncontent-length: %d\r\n\r\n" % len(body) + body
        )
        head, answer = read_answer(tls)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(answer)["body_length"] == BIG


def test_twenty_megabytes_come_down_to_a_slow_reader_with_flow_control(
    ca: CA, gateway: Gateway, grace: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client reads nothing for a while: the gateway's TLS transport pauses its protocol
    (which pauses the upstream) instead of buffering the 20 MB."""
    paused = []
    original = TLSTransport.pause_writing

    def pause_writing(self: TLSTransport) -> None:
        paused.append(self.get_write_buffer_size())
        original(self)

    monkeypatch.setattr(TLSTransport, "pause_writing", pause_writing)
    lines = 20_000  # each 1,000 bytes and a number: some 20 MB in all
    digest = hashlib.sha256()
    expected = hashlib.sha256()
    for i in range(lines):
        expected.update(b"x" * 1000 + b"%d\n" % i)
    with connect(ca, grace, gateway.port) as tls:
        tls.sendall(b"GET /stream?n=%d HTTP/1.1\r\nHost: gw\r\nconnection: close\r\n\r\n" % lines)
        time.sleep(1.0)  # the gateway's buffers fill meanwhile
        data = b""
        while b"\r\n\r\n" not in data:
            data += tls.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"transfer-encoding: chunked" in head.lower()
        body = bytearray(rest)
        while chunk := tls.recv(1 << 20):  # to the gateway's close_notify (no ragged EOF)
            body += chunk
    payload = _dechunk(bytes(body))
    digest.update(payload)
    assert digest.hexdigest() == expected.hexdigest()
    assert paused, "the slow reader never made the transport pause its protocol"
    assert max(paused) < 4 * 1024 * 1024  # paused near the high-water mark, not at 20 MB


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    view = memoryview(body)
    while True:
        end = bytes(view[:20]).index(b"\r\n")
        size = int(bytes(view[:end]), 16)
        if size == 0:
            return bytes(out)
        out += view[end + 2 : end + 2 + size]
        view = view[end + 2 + size + 2 :]


def test_the_gateway_ends_with_a_close_notify(ca: CA, gateway: Gateway, grace: Issued) -> None:
    """``connection: close``: after the answer, a close_notify (``recv`` returns b"", where
    a bare close would raise, ``suppress_ragged_eofs`` being off)."""
    with connect(ca, grace, gateway.port) as tls:
        tls.sendall(b"GET /bye HTTP/1.1\r\nHost: gw\r\nconnection: close\r\n\r\n")
        head, _ = read_answer(tls)
        assert head.startswith(b"HTTP/1.1 200")
        assert tls.recv(65536) == b""


def test_a_close_notify_from_the_client_is_answered_with_one(
    ca: CA, gateway: Gateway, grace: Issued
) -> None:
    with connect(ca, grace, gateway.port) as tls:
        tls.sendall(b"GET /first HTTP/1.1\r\nHost: gw\r\n\r\n")
        head, _ = read_answer(tls)
        assert head.startswith(b"HTTP/1.1 200")
        raw = tls.unwrap()  # sends ours, waits for the gateway's
        assert closed_by_gateway(raw, 5)
        raw.close()


def test_an_abrupt_close_mid_upload_frees_the_connection(
    ca: CA, gateway: Gateway, grace: Issued
) -> None:
    deadline = time.monotonic() + 5
    while gateway.open_connections and time.monotonic() < deadline:  # the earlier tests'
        time.sleep(0.02)
    opened = gateway.open_connections
    with connect(ca, grace, gateway.port) as tls:
        tls.sendall(b"POST /cut HTTP/1.1\r\nHost: gw\r\ncontent-length: 1000000\r\n\r\n")
        tls.sendall(b"x" * 100_000)
        time.sleep(0.2)
        assert gateway.open_connections == opened + 1
        tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    deadline = time.monotonic() + 5
    while gateway.open_connections != opened and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gateway.open_connections == opened


def test_a_reload_serves_new_connections_from_the_new_context_and_keeps_open_ones(
    ca: CA, upstream: EchoUpstream, grace: Issued, tmp_path: Path
) -> None:
    cert, key = tmp_path / "gw.crt", tmp_path / "gw.key"
    first = ca.issue("gw-first", ("dns:localhost", "ip:127.0.0.1"), profile="server")
    second = ca.issue("gw-second", ("dns:localhost", "ip:127.0.0.1"), profile="server")
    cert.write_bytes(first.cert_file.read_bytes())
    key.write_bytes(first.key_file.read_bytes())
    config = gateway_config(ca, f"http://127.0.0.1:{upstream.port}", cert=cert, key=key)
    with (
        run_gateway(config, on_uvloop=True) as gateway,
        connect(ca, grace, gateway.port) as open_one,
    ):
        assert served_certificate(ca, grace, gateway.port) == first.certificate
        cert.write_bytes(second.cert_file.read_bytes())
        key.write_bytes(second.key_file.read_bytes())
        old = gateway.loaded.context
        gateway._loop.call_soon_threadsafe(gateway.reload)  # type: ignore[union-attr]
        deadline = time.monotonic() + 5
        while gateway.loaded.context is old and time.monotonic() < deadline:
            time.sleep(0.02)
        assert served_certificate(ca, grace, gateway.port) == second.certificate
        open_one.sendall(b"GET /still HTTP/1.1\r\nHost: gw\r\n\r\n")
        head, _ = read_answer(open_one)
        assert head.startswith(b"HTTP/1.1 200")
        der = open_one.getpeercert(binary_form=True)
        assert der == first.certificate.public_bytes(Encoding.DER)


def test_records_wait_in_openssl_while_reading_is_paused(
    ca: CA, upstream: EchoUpstream, grace: Issued
) -> None:
    """The protocol pauses reading mid-upload: the TCP transport stops, what OpenSSL already
    holds waits, and on resume all of it comes, in order, in a later loop iteration."""
    context = load(gateway_config(ca, f"http://127.0.0.1:{upstream.port}")).context
    payload = bytes(range(256)) * 16384  # 4 MiB
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)

    def send() -> None:
        with connect(ca, grace, listener.getsockname()[1]) as tls:
            tls.sendall(payload)
            assert tls.recv(10) == b"done"

    async def serve() -> tuple[bytes, list[bool]]:
        loop = asyncio.get_running_loop()
        received = bytearray()
        done = loop.create_future()
        reading: list[bool] = []

        class Slow(asyncio.Protocol):
            transport: TLSTransport

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                # At the handshake's end; what the client sent with it follows at once.
                self.transport = transport  # type: ignore[assignment]

            def data_received(self, data: bytes) -> None:
                if not self.transport.is_reading():
                    reading.append(True)  # data while paused: fails the test below
                received.extend(data)
                if len(received) >= len(payload) // 4 and not reading:
                    self.transport.pause_reading()
                    reading.append(self.transport.is_reading())
                    loop.call_later(0.3, self.transport.resume_reading)
                if len(received) == len(payload) and not done.done():
                    done.set_result(None)

        sender = loop.run_in_executor(None, send)
        sock, _ = await loop.sock_accept(listener)
        slow = Slow()
        assert await accept_tls(sock, slow, context, timeout=5) is slow.transport
        await asyncio.wait_for(done, 10)
        slow.transport.write(b"done")
        await asyncio.wait_for(sender, 10)
        slow.transport.close()
        return bytes(received), reading

    try:
        received, reading = asyncio.run(serve())
    finally:
        listener.close()
    assert reading == [False]
    assert received == payload


def test_a_finished_connection_frees_its_openssl_state_without_the_collector(
    ca: CA, gateway: Gateway, grace: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The HTTP protocol and its parser are a reference cycle, which the transport belongs
    to: OpenSSL's state (tens of kB) is dropped when the connection is lost, not when the
    collector runs."""
    connections: list[weakref.ref[SSL.Connection]] = []
    original = TLSTransport.connection_made

    def connection_made(self: TLSTransport, transport: asyncio.BaseTransport) -> None:
        original(self, transport)
        tls = self.get_extra_info("ssl_object")
        connections.append(weakref.ref(tls))

    monkeypatch.setattr(TLSTransport, "connection_made", connection_made)
    gc.disable()
    try:
        for _ in range(3):
            with connect(ca, grace, gateway.port) as tls:
                tls.sendall(b"GET /free HTTP/1.1\r\nHost: gw\r\nconnection: close\r\n\r\n")
                assert read_answer(tls)[0].startswith(b"HTTP/1.1 200")
        deadline = time.monotonic() + 5
        while any(ref() is not None for ref in connections) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(connections) == 3
        assert all(ref() is None for ref in connections)
    finally:
        gc.enable()
