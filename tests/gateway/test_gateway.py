"""Our gateway, for real: TLS on loopback, our CA server answering OCSP and CRLs, an upstream
that shows what reached it."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from ostiary.core.errors import InvalidCertificate
from ostiary.gateway.config import Route
from ostiary.gateway.server import Gateway
from ostiary.gateway.trust import Trust
from ostiary.tls import client_context, server_context
from tests.gateway.conftest import (
    CA,
    EchoUpstream,
    Issued,
    gateway_config,
    header,
    run_gateway,
    served_certificate,
)

HARDWARE_POLICY = "1.3.6.1.4.1.99999.7.1"


@pytest.fixture(scope="module")
def gateway(ca: CA, upstream: EchoUpstream) -> Iterator[Gateway]:
    routes = (
        Route(prefix="/"),
        Route(prefix="/garage", san_patterns=("email:*@example.com",)),
        Route(prefix="/vault", policy_oids=(HARDWARE_POLICY,)),
        Route(prefix="/alice-only", subjects=("CN=alice",)),
    )
    with run_gateway(
        gateway_config(ca, f"http://127.0.0.1:{upstream.port}", routes=routes)
    ) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def alice(ca: CA) -> Issued:
    return ca.issue("alice", ("email:alice@example.com", "dns:alice.lab"))


def refused(ca: CA, issued: Issued | None, port: int) -> bool:
    """True if the gateway does not let the request through (TLS alert or closed)."""
    try:
        with ca.client(issued, port) as client:
            client.get("/")
    except httpx.TransportError:
        return True
    return False


def test_certificate_from_our_ca_is_accepted_with_identity_headers(
    ca: CA, gateway: Gateway, alice: Issued
) -> None:
    with ca.client(alice, gateway.port) as client:
        answer = client.get("/hello?x=1")
    assert answer.status_code == 200
    seen = answer.json()
    assert seen["target"] == "/hello?x=1"
    assert header(seen, "x-client-subject") == ["CN=alice"]
    assert header(seen, "x-client-serial") == [format(alice.certificate.serial_number, "x")]
    assert header(seen, "x-client-san") == ["email:alice@example.com, dns:alice.lab"]
    (xfcc,) = header(seen, "x-forwarded-client-cert")
    digest = alice.certificate.fingerprint(hashes.SHA256()).hex()
    assert xfcc.startswith(f'Hash={digest};Subject="CN=alice";DNS=alice.lab;Cert="')
    pem = unquote(xfcc.split('Cert="')[1].rstrip('"'))
    assert x509.load_pem_x509_certificate(pem.encode()) == alice.certificate


def refused_and_counted(ca: CA, issued: Issued | None, gateway: Gateway) -> Counter[str]:
    """:func:`refused`, then wait for the gateway to count it (it may count after the client
    has seen the refusal, so a test that did not wait would leak its count into the next);
    the counts it added, by reason."""
    before = Counter(gateway.metrics.refused)
    assert refused(ca, issued, gateway.port)
    deadline = time.monotonic() + 5
    while gateway.metrics.refused == before and time.monotonic() < deadline:
        time.sleep(0.02)
    return Counter(gateway.metrics.refused) - before


def test_server_certificate_is_not_a_client_certificate(ca: CA, gateway: Gateway) -> None:
    """Same CA, but EKU serverAuth only: refused (by OpenSSL's purpose check or ours)."""
    assert sum(refused_and_counted(ca, ca.server, gateway).values()) == 1


@pytest.mark.parametrize("case", ["fail/no-certificate", "fail/foreign-ca", "fail/expired"])
def test_refused_certificates(ca: CA, gateway: Gateway, foreign: Issued, case: str) -> None:
    issued = {"fail/no-certificate": None, "fail/foreign-ca": foreign}.get(case)
    if case == "fail/expired":
        issued = ca.expired()
        assert issued.certificate.not_valid_after_utc < datetime.now(UTC)
    assert refused_and_counted(ca, issued, gateway) == {"handshake": 1}


def test_revoked_certificate_is_refused_within_seconds(ca: CA, gateway: Gateway) -> None:
    bob = ca.issue("bob", ("email:bob@example.com",))
    with ca.client(bob, gateway.port) as client:
        assert client.get("/").status_code == 200
    ca.revoke(bob)
    revoked_at = time.monotonic()
    while not refused(ca, bob, gateway.port):
        assert time.monotonic() - revoked_at < 5, "still accepted 5 s after revocation"
        time.sleep(0.1)
    assert gateway.metrics.refused["revoked"] >= 1


def test_spoofed_identity_headers_never_reach_the_upstream(
    ca: CA, gateway: Gateway, alice: Issued
) -> None:
    spoof = {
        "X-Client-Subject": "CN=admin",
        "X-Client-Serial": "01",
        "X-Client-SAN": "email:admin@example.com",
        "X-Forwarded-Client-Cert": 'Hash=00;Subject="CN=admin"',
        "X-Client-Verify": "SUCCESS",
        "X-Forwarded-For": "10.9.9.9",
    }
    with ca.client(alice, gateway.port) as client:
        seen = client.get("/", headers=spoof).json()
    assert header(seen, "x-client-subject") == ["CN=alice"]
    assert header(seen, "x-client-serial") == [format(alice.certificate.serial_number, "x")]
    assert header(seen, "x-client-san") == ["email:alice@example.com, dns:alice.lab"]
    assert len(header(seen, "x-forwarded-client-cert")) == 1
    assert "admin" not in str(seen["headers"])
    assert header(seen, "x-forwarded-for") == ["127.0.0.1"]


@pytest.mark.parametrize(
    ("path", "subject", "sans", "policies", "status"),
    [
        pytest.param("/garage/open", "alice", ("email:alice@example.com",), (), 200, id="ok/san"),
        pytest.param("/garage/open", "eve", ("email:eve@evil.test",), (), 403, id="fail/san"),
        pytest.param(
            "/vault", "hw", ("email:hw@example.com",), (HARDWARE_POLICY,), 200, id="ok/policy"
        ),
        pytest.param("/vault/x", "sw", ("email:sw@example.com",), (), 403, id="fail/policy"),
        pytest.param(
            "/alice-only", "alice", ("email:alice@example.com",), (), 200, id="ok/subject"
        ),
        pytest.param(
            "/alice-only", "mallory", ("email:m@example.com",), (), 403, id="fail/subject"
        ),
        pytest.param(
            "/garagex", "eve", ("email:eve@evil.test",), (), 200, id="ok/prefix-is-by-segment"
        ),
    ],
)
def test_route_rules(
    ca: CA,
    gateway: Gateway,
    path: str,
    subject: str,
    sans: tuple[str, ...],
    policies: tuple[str, ...],
    status: int,
) -> None:
    issued = ca.issue(subject, sans, policies=policies)
    reasons = {
        "/garage/open": "san-not-allowed",
        "/vault/x": "policy-missing",
        "/alice-only": "subject-not-allowed",
    }
    before = gateway.metrics.refused[reasons.get(path, "")]
    with ca.client(issued, gateway.port) as client:
        answer = client.get(path)
    assert answer.status_code == status
    if status == 403:
        assert answer.text == f"forbidden: {reasons[path]}\n"
        assert gateway.metrics.refused[reasons[path]] == before + 1


def test_keep_alive_streaming_bodies_and_chunked_responses(
    ca: CA, gateway: Gateway, upstream: EchoUpstream, alice: Issued
) -> None:
    def body() -> Iterator[bytes]:
        for _ in range(64):
            yield b"y" * 16384

    with ca.client(alice, gateway.port) as client:
        first = client.post("/upload", content=body()).json()
        second = client.get("/again").json()
        streamed = b""
        with client.stream("GET", "/stream?n=300") as answer:
            for chunk in answer.iter_bytes():
                streamed += chunk
    assert first["body_length"] == 64 * 16384
    assert header(first, "transfer-encoding") == ["chunked"]
    assert first["connection"] == second["connection"], "keep-alive upstream"
    assert streamed.count(b"\n") == 300
    assert streamed.endswith(b"299\n")


def test_websocket_upgrade_passes_through(ca: CA, gateway: Gateway, alice: Issued) -> None:
    context = client_context([ca.authority.ca.root], identity=alice.identity)
    with (
        socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += tls.recv(4096)
        assert head.startswith(b"HTTP/1.1 101 ")
        tls.sendall(b"\x81\x05hello")
        echoed = b""
        while len(echoed) < 7:
            echoed += tls.recv(4096)
        assert echoed == b"\x81\x05hello"


def test_issuer_thumbprint_allowlist(ca: CA, upstream: EchoUpstream, alice: Issued) -> None:
    intermediate = ca.authority.ca.intermediate.fingerprint(hashes.SHA256()).hex()
    url = f"http://127.0.0.1:{upstream.port}"
    with run_gateway(gateway_config(ca, url, issuer_thumbprints=(intermediate,))) as gateway:
        with ca.client(alice, gateway.port) as client:
            assert client.get("/").status_code == 200
    with run_gateway(gateway_config(ca, url, issuer_thumbprints=("ab" * 32,))) as gateway:
        assert refused(ca, alice, gateway.port)
        assert gateway.metrics.refused["issuer-not-allowed"] == 1


def test_an_intermediate_in_the_files_is_no_anchor_without_its_root(
    ca: CA, upstream: EchoUpstream, alice: Issued, foreign: Issued, tmp_path: Path
) -> None:
    """The handshake may end the chain at an intermediate of the ``ca_roots`` files (partial
    chain: OpenSSL lets the foreign client through); the path check after it still wants a
    pinned root, so that client is refused there, and ours still pass.
    """
    files = tmp_path / "ca.pem"
    stray = foreign.identity.chain[1].public_bytes(serialization.Encoding.PEM)
    files.write_bytes(ca.ca_file.read_bytes() + stray)
    config = gateway_config(ca, f"http://127.0.0.1:{upstream.port}", ca_roots=(files,))
    with run_gateway(config) as gateway:
        with ca.client(alice, gateway.port) as client:
            assert client.get("/").status_code == 200
        assert refused(ca, foreign, gateway.port)
        assert gateway.metrics.refused["handshake"] == 0  # past OpenSSL, refused by our check
        assert sum(gateway.metrics.refused.values()) == 1
        assert gateway.metrics.accepted == 1


def test_revocation_fails_closed_past_the_grace(
    ca: CA,
    upstream: EchoUpstream,
    tmp_path_factory: pytest.TempPathFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A certificate whose OCSP and CRL locations do not answer is refused with no grace."""
    from tests.gateway.conftest import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    authority = ca.authority
    from dataclasses import replace

    from ostiary.authority.authority import Authority
    from ostiary.authority.folder import leaf_urls

    material = replace(authority.ca, config=authority.ca.config.model_copy(update={"url": dead}))
    elsewhere = Authority(material, authority.store)
    assert elsewhere.issuer.urls == leaf_urls(dead)
    orphan = ca.issue("orphan", ("email:orphan@example.com",), via=elsewhere)
    url = f"http://127.0.0.1:{upstream.port}"
    with run_gateway(gateway_config(ca, url, revocation_grace_seconds=0)) as gateway:
        assert refused(ca, orphan, gateway.port)
        assert gateway.metrics.refused["revocation-unknown"] == 1
    # The log names the serial in hex, as every other output does, never in decimal.
    serial = orphan.certificate.serial_number
    assert f"revocation status unknown for serial {serial:x}:" in caplog.text
    assert str(serial) not in caplog.text
    with run_gateway(gateway_config(ca, url, revocation="off")) as gateway:
        with ca.client(orphan, gateway.port) as client:
            assert client.get("/").status_code == 200


def test_crl_method_sees_a_revocation(ca: CA, upstream: EchoUpstream) -> None:
    url = f"http://127.0.0.1:{upstream.port}"
    carol = ca.issue("carol", ("email:carol@example.com",))
    with run_gateway(gateway_config(ca, url, revocation="crl")) as gateway:
        with ca.client(carol, gateway.port) as client:
            assert client.get("/").status_code == 200
        ca.revoke(carol)
        deadline = time.monotonic() + 5
        while not refused(ca, carol, gateway.port):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert gateway.metrics.refused["revoked"] == 1


def test_metrics_count_accepted_and_refused_by_reason(
    ca: CA, gateway: Gateway, alice: Issued
) -> None:
    with ca.client(alice, gateway.port) as client:
        client.get("/")
    text = httpx.get(f"http://127.0.0.1:{gateway.metrics_port}/metrics", timeout=5).text
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    accepted = int(values["ostiary_gateway_connections_accepted_total"])
    assert accepted == gateway.metrics.accepted >= 1
    assert 'ostiary_gateway_requests_total{status="200"}' in text
    assert httpx.get(f"http://127.0.0.1:{gateway.metrics_port}/other", timeout=5).status_code == 404


def test_new_certificate_file_is_picked_up_without_restart(
    ca: CA, upstream: EchoUpstream, alice: Issued, tmp_path: Path
) -> None:
    cert = tmp_path / "gw.crt"
    key = tmp_path / "gw.key"
    first = ca.issue("gw-one", ("dns:localhost", "ip:127.0.0.1"), profile="server")
    cert.write_bytes(first.cert_file.read_bytes())
    key.write_bytes(first.key_file.read_bytes())
    config = gateway_config(
        ca, f"http://127.0.0.1:{upstream.port}", cert=cert, key=key, reload_interval_seconds=0.2
    )

    def served_serial(port: int) -> int:
        return served_certificate(ca, alice, port).serial_number

    with run_gateway(config) as gateway:
        assert served_serial(gateway.port) == first.certificate.serial_number
        second = ca.issue("gw-two", ("dns:localhost", "ip:127.0.0.1"), profile="server")
        key.write_bytes(second.key_file.read_bytes())
        cert.write_bytes(second.cert_file.read_bytes())
        deadline = time.monotonic() + 5
        while served_serial(gateway.port) != second.certificate.serial_number:
            assert time.monotonic() < deadline, "the new certificate was not picked up"
            time.sleep(0.1)
        key.write_bytes(b"garbage")  # a broken file keeps the previous identity
        time.sleep(0.6)
        assert served_serial(gateway.port) == second.certificate.serial_number
        assert gateway.metrics.reloads["failed"] >= 1


def test_no_ca_names_are_sent_in_the_certificate_request(ca: CA, gateway: Gateway) -> None:
    """OpenSSL sends CA names only from an explicit client-CA list, which Python's ssl never
    sets: the CertificateRequest lists no issuers (checked with ``openssl s_client``)."""
    import subprocess

    from tests.conftest import require_tool

    openssl = require_tool("openssl")
    for version in ("-tls1_2", "-tls1_3"):
        result = subprocess.run(
            [
                openssl,
                "s_client",
                version,
                "-connect",
                f"127.0.0.1:{gateway.port}",
                "-CAfile",
                str(ca.root_file),
            ],
            input=b"",
            capture_output=True,
            timeout=10,
            check=False,
        )
        text = result.stdout.decode(errors="replace")
        assert "No client certificate CA names sent" in text, text
        assert "Acceptable client certificate CA names" not in text


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"]
)
def test_sessions_resume_from_the_gateway_cache_without_tickets(
    ca: CA, gateway: Gateway, alice: Issued, version: ssl.TLSVersion
) -> None:
    """A returning client resumes its session, which the gateway keeps itself: a TLS 1.2
    client is sent no session ticket (a ticket would hold the session, client certificate
    included, encrypted under a key that never changes while the process lives). The session
    survives a client that drops the connection without a close_notify, as most do."""
    context = client_context([ca.authority.ca.root], identity=alice.identity)
    context.minimum_version = context.maximum_version = version

    def connect(session: ssl.SSLSession | None = None) -> tuple[ssl.SSLSession | None, bool]:
        raw = socket.create_connection(("127.0.0.1", gateway.port), timeout=5)
        with context.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")  # keep-alive
            answer = b""
            while b"\r\n\r\n" not in answer:  # a TLS 1.3 session arrives after the handshake
                answer += tls.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
            result = tls.session, tls.session_reused
        # Closed without unwrap(): no close_notify, as a browser or curl dropping a
        # connection. The gateway sees the end of the stream.
        return result

    first, reused = connect()
    assert first is not None and not reused
    if version is ssl.TLSVersion.TLSv1_2:
        assert not first.has_ticket
    for _ in range(3):
        time.sleep(0.1)  # the gateway has seen the previous connection end
        assert connect(first)[1], "the session was not resumed"


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"]
)
def test_a_resumed_session_of_a_revoked_certificate_is_refused(
    ca: CA, gateway: Gateway, version: ssl.TLSVersion
) -> None:
    """Resumption skips the certificate exchange, not the gateway's checks: the session of a
    certificate revoked since is still resumed by TLS, and the connection refused."""
    carol = ca.issue("carol", ("email:carol@example.com",))
    context = client_context([ca.authority.ca.root], identity=carol.identity)
    context.minimum_version = context.maximum_version = version

    def connect(session: ssl.SSLSession | None = None) -> tuple[ssl.SSLSession | None, bool, bytes]:
        raw = socket.create_connection(("127.0.0.1", gateway.port), timeout=5)
        with context.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as tls:
            answer = b""
            try:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
                while b"\r\n\r\n" not in answer and (chunk := tls.recv(65536)):
                    answer += chunk
            except (OSError, ssl.SSLError):
                pass  # refused: the gateway closed the connection
            return tls.session, tls.session_reused, answer

    session, _, answer = connect()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    before = gateway.metrics.refused["revoked"]
    ca.revoke(carol)
    deadline = time.monotonic() + 5
    while True:
        _, reused, answer = connect(session)
        assert reused, "the session was not resumed"
        if not answer:
            break
        assert time.monotonic() < deadline, "a resumed session was let through after revocation"
        time.sleep(0.1)
    assert gateway.metrics.refused["revoked"] > before


def test_a_verified_path_is_reused_only_while_all_of_it_is_valid(ca: CA, alice: Issued) -> None:
    """The gateway verifies a client's path once per trust generation; the cached path still
    refuses a leaf outside its validity, checked on every connection."""
    trust = Trust((ca.authority.ca.root,), (ca.authority.issuer.certificate,), frozenset())
    leaf = alice.certificate
    now = datetime.now(UTC)
    for _ in range(2):  # the second answer comes from the cache
        assert trust.verify(leaf, now=now) == (
            leaf,
            ca.authority.issuer.certificate,
            ca.authority.ca.root,
        )
    for outside in (
        leaf.not_valid_after_utc + timedelta(seconds=1),
        leaf.not_valid_before_utc - timedelta(seconds=1),
    ):
        with pytest.raises(InvalidCertificate):
            trust.verify(leaf, now=outside)


def test_tcp_mode_tunnels_bytes_after_the_checks(ca: CA, alice: Issued, foreign: Issued) -> None:
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def echo_once() -> None:
        connection, _ = listener.accept()
        with connection:
            while data := connection.recv(4096):
                connection.sendall(data.upper())

    thread = threading.Thread(target=echo_once, daemon=True)
    thread.start()
    config = gateway_config(ca, f"tcp://127.0.0.1:{port}", mode="tcp")
    with run_gateway(config) as gateway:
        context = client_context([ca.authority.ca.root], identity=alice.identity)
        with (
            socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"mqtt hello")
            assert tls.recv(4096) == b"MQTT HELLO"
        assert tunnel_refused(ca, foreign, gateway.port)
    listener.close()


def tunnel_refused(ca: CA, issued: Issued, port: int) -> bool:
    context = client_context([ca.authority.ca.root], identity=issued.identity)
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"x")
            return not tls.recv(10)
    except (ssl.SSLError, ConnectionError):
        return True


def test_new_trust_file_is_picked_up_without_restart(
    ca: CA, upstream: EchoUpstream, alice: Issued, foreign: Issued, tmp_path: Path
) -> None:
    """Trust is reloaded too: with only another CA's root in the file, its holders get in and
    ours are shut out; a connection already open keeps going."""
    roots = tmp_path / "roots.pem"
    roots.write_bytes(ca.ca_file.read_bytes())
    config = gateway_config(
        ca,
        f"http://127.0.0.1:{upstream.port}",
        ca_roots=(roots,),
        revocation="off",  # the other CA's OCSP/CRL URLs do not exist
        reload_interval_seconds=0.2,
    )
    with run_gateway(config) as gateway:
        assert refused(ca, foreign, gateway.port)
        with ca.client(alice, gateway.port) as kept:
            assert kept.get("/").status_code == 200
            roots.write_bytes((foreign.cert_file.parent / "ca.pem").read_bytes())
            deadline = time.monotonic() + 5
            while refused(ca, foreign, gateway.port):
                assert time.monotonic() < deadline, "the new trust was not picked up"
                time.sleep(0.1)
            assert refused(ca, alice, gateway.port)
            assert kept.get("/").status_code == 200, "an open connection keeps going"


@pytest.mark.parametrize("case", ["ok/verified", "ok/with-client-certificate", "fail/untrusted"])
def test_https_upstream(ca: CA, alice: Issued, foreign: Issued, case: str) -> None:
    """An https:// upstream is verified against ``upstream_ca`` only (its name checked too),
    and gets the gateway's own client certificate when one is configured."""
    server = ca.issue("upstream", ("dns:localhost", "ip:127.0.0.1"), profile="server")
    wants_client = case == "ok/with-client-certificate"
    context = server_context(
        server.identity,
        client_certificates="required" if wants_client else "none",
        client_trust=[ca.authority.ca.root, ca.authority.ca.intermediate] if wants_client else (),
    )
    upstream = EchoUpstream(context).start()
    options: dict[str, object] = {
        "upstream_ca": foreign.cert_file.parent / "ca.pem"
        if case == "fail/untrusted"
        else ca.root_file
    }
    if wants_client:
        gateway_identity = ca.issue("gateway", ("dns:gateway.lab",))
        options |= {
            "upstream_cert": gateway_identity.cert_file,
            "upstream_key": gateway_identity.key_file,
        }
    try:
        with run_gateway(gateway_config(ca, f"https://127.0.0.1:{upstream.port}", **options)) as gw:
            with ca.client(alice, gw.port) as client:
                answer = client.get("/over-tls")
    finally:
        upstream.stop()
    if case == "fail/untrusted":
        assert answer.status_code == 502
        assert upstream.seen == []
        return
    assert answer.status_code == 200
    seen = answer.json()
    assert header(seen, "x-client-subject") == ["CN=alice"]
    assert seen["tls_client"] == ({"commonName": "gateway"} if wants_client else None)


def raw_exchange(ca: CA, issued: Issued, port: int, data: bytes, until: bytes) -> bytes:
    """Send ``data`` over one mTLS connection; read until ``until`` arrives or the gateway
    closes."""
    context = client_context([ca.authority.ca.root], identity=issued.identity)
    received = b""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(data)
        while until not in received:
            chunk = tls.recv(65536)
            if not chunk:
                break
            received += chunk
    return received


def test_pipelined_head_and_http10_requests(ca: CA, gateway: Gateway, alice: Issued) -> None:
    """Two requests in one write are answered in order on the kept-alive connection; a HEAD
    answer has headers only; an HTTP/1.0 request without Host still reaches the upstream
    (the gateway names it) and is answered, then closed."""
    answer = raw_exchange(
        ca,
        alice,
        gateway.port,
        b"HEAD /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n",
        b'"target": "/second"',
    )
    head, rest = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"content-length: " in head.lower()
    assert rest.startswith(b"HTTP/1.1 200 "), "no body after the HEAD answer"
    assert b'"target": "/second"' in rest
    old = raw_exchange(ca, alice, gateway.port, b"GET /old HTTP/1.0\r\n\r\n", b"\0never")
    assert old.startswith(b"HTTP/1.1 200 ")
    seen = json.loads(old.split(b"\r\n\r\n", 1)[1])
    assert header(seen, "host") == [f"127.0.0.1:{seen_upstream_port(gateway)}"]
    assert b"connection: close" in old.lower()


def seen_upstream_port(gateway: Gateway) -> int:
    return int(gateway.config.upstream.rsplit(":", 1)[1])


def test_bad_request_is_answered_400_and_closed(ca: CA, gateway: Gateway, alice: Issued) -> None:
    answer = raw_exchange(ca, alice, gateway.port, b"NOT HTTP AT ALL\r\n\r\n", b"\0never")
    assert answer.startswith(b"HTTP/1.1 400 ")


def test_upstream_down_is_answered_502(ca: CA, alice: Issued) -> None:
    from tests.gateway.conftest import free_port

    with run_gateway(gateway_config(ca, f"http://127.0.0.1:{free_port()}")) as gateway:
        with ca.client(alice, gateway.port) as client:
            answer = client.get("/")
    assert answer.status_code == 502
    assert gateway.metrics.requests[502] == 1
