"""The plain-HTTP listener (``ostiary.server.public_http``) and the OCSP cache behind it.

HTTP/1.1 is spoken over raw sockets here, so that keep-alive, pipelining, HEAD and refusals
are seen exactly as a client sees them. The OCSP tests run two replicas on one database with
a revocation watch that only polls when the test says so: what a replica keeps, and when it
lets go of it, is then deterministic.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp
from sqlalchemy import delete

from ostiary.authority.authority import Authority
from ostiary.authority.folder import CAMaterial
from ostiary.authority.publisher import CrlPublisher
from ostiary.core.issuance import Authorization
from ostiary.core.names import parse_subject
from ostiary.server.body import MAX_BODY_SIZE
from ostiary.server.problems import PROBLEM_JSON
from ostiary.store import CertificateRepository, LatestCrl
from tests.server.conftest import (
    Provisioners,
    Running,
    make_csr,
    run_server,
    unrecorded_certificate,
)
from tests.server.processes import make_ca_folder, serving
from tests.server.test_publish import ocsp_request, revoke_by_admin

#: A watch that never polls by itself: the tests call ``watch.poll()``.
NEVER = {"watch_interval": 3600.0, "trust_for": 3600.0}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def read_answer(stream: BinaryIO, *, head_only: bool = False) -> Answer:
    status_line = stream.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers: dict[str, str] = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    status = int(status_line.split()[1])
    length = 0 if head_only or status == 304 else int(headers["content-length"])
    return Answer(status, headers, stream.read(length))


@contextmanager
def connection(running: Running) -> Iterator[tuple[socket.socket, BinaryIO]]:
    parts = urlsplit(running.server.http_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        with sock.makefile("rb") as stream:
            yield sock, stream


def get(path: str, *extra: str, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: ca.example", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post_ocsp_raw(body: bytes, content_type: str = "application/ocsp-request") -> bytes:
    head = get(
        "/ocsp", f"Content-Type: {content_type}", f"Content-Length: {len(body)}", method="POST"
    )
    return head + body


def closed(sock: socket.socket, stream: BinaryIO) -> bool:
    """Whether the server has closed the connection (EOF within a few seconds)."""
    sock.settimeout(5)
    return stream.read(1) == b""


# --------------------------------------------------------------------------- HTTP/1.1


def test_one_connection_carries_many_requests_each_with_its_length(running: Running) -> None:
    with connection(running) as (sock, stream):
        for path in ("/health", "/root.crt", "/crl", "/health"):
            sock.sendall(get(path))
            answer = read_answer(stream)
            assert answer.status == 200
            assert int(answer.headers["content-length"]) == len(answer.body) > 0
            assert "date" in answer.headers
    assert json.loads(answer.body) == {"status": "ok"}


def test_pipelined_requests_are_answered_in_order_even_when_one_waits_for_a_thread(
    running: Running,
) -> None:
    alice = running.enroll()
    request = ocsp_request(alice.certificate, running.authority.ca.intermediate)
    with connection(running) as (sock, stream):
        # /crl and a first OCSP answer go through worker threads; /health and /root.crt not.
        sock.sendall(get("/crl") + get("/health") + post_ocsp_raw(request) + get("/root.crt"))
        answers = [read_answer(stream) for _ in range(4)]
    assert [a.status for a in answers] == [200, 200, 200, 200]
    assert [a.headers["content-type"] for a in answers] == [
        "application/pkix-crl",
        "application/json",
        "application/ocsp-response",
        "application/pkix-cert",
    ]
    x509.load_der_x509_crl(answers[0].body)
    assert (
        ocsp.load_der_ocsp_response(answers[2].body).serial_number
        == alice.certificate.serial_number
    )
    assert answers[3].body == running.root.public_bytes(serialization.Encoding.DER)


def test_head_gives_the_headers_of_get_without_the_body(running: Running) -> None:
    with connection(running) as (sock, stream):
        sock.sendall(get("/crl"))
        full = read_answer(stream)
        sock.sendall(get("/crl", method="HEAD") + get("/health"))
        head = read_answer(stream, head_only=True)
        after = read_answer(stream)  # the HEAD answer carried no body: this parses cleanly
    assert head.status == 200
    assert head.headers["content-length"] == str(len(full.body))
    assert head.headers["etag"] == full.headers["etag"]
    assert head.body == b""
    assert after.status == 200 and json.loads(after.body) == {"status": "ok"}


def test_an_unchanged_crl_gets_304_on_the_plain_listener(running: Running) -> None:
    with connection(running) as (sock, stream):
        sock.sendall(get("/crl"))
        etag = read_answer(stream).headers["etag"]
        sock.sendall(get("/crl", f"If-None-Match: {etag}") + get("/health"))
        not_modified = read_answer(stream)
        assert read_answer(stream).status == 200
    assert not_modified.status == 304
    assert not_modified.body == b""
    assert not_modified.headers["etag"] == etag


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40), id="tls-hello"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", id="bad-length"),
        pytest.param(b"GARBAGE\r\n\r\n", id="no-version"),
        pytest.param(b"GET /health HTTP/1.1\r\nBad Header\r\n\r\n", id="bad-header"),
    ],
)
def test_what_is_not_http_gets_a_400_problem_and_the_connection_closes(
    running: Running, raw: bytes
) -> None:
    with connection(running) as (sock, stream):
        sock.sendall(raw)
        answer = read_answer(stream)
        assert answer.status == 400
        assert answer.headers["content-type"] == PROBLEM_JSON
        assert json.loads(answer.body)["type"] == "urn:ostiary:error:bad-request"
        assert closed(sock, stream)


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(running: Running) -> None:
    with connection(running) as (sock, stream):
        sock.sendall(
            get(
                "/ocsp",
                "Content-Type: application/ocsp-request",
                f"Content-Length: {MAX_BODY_SIZE + 1}",
                method="POST",
            )
        )
        answer = read_answer(stream)
        assert answer.status == 413
        assert json.loads(answer.body)["limit"] == MAX_BODY_SIZE
        assert closed(sock, stream)


def test_a_chunked_body_over_the_limit_is_refused_while_it_streams(running: Running) -> None:
    chunk = b"a" * 4096
    with connection(running) as (sock, stream):
        sock.sendall(
            get(
                "/ocsp",
                "Content-Type: application/ocsp-request",
                "Transfer-Encoding: chunked",
                method="POST",
            )
        )
        try:
            for _ in range(MAX_BODY_SIZE // len(chunk) + 2):
                sock.sendall(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while the rest was on its way
        answer = read_answer(stream)
    assert answer.status == 413
    assert answer.headers["content-type"] == PROBLEM_JSON


def test_connection_close_and_http_1_0_end_the_connection(running: Running) -> None:
    with connection(running) as (sock, stream):
        sock.sendall(get("/health", "Connection: close"))
        answer = read_answer(stream)
        assert answer.status == 200
        assert answer.headers["connection"] == "close"
        assert closed(sock, stream)
    with connection(running) as (sock, stream):
        sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        assert read_answer(stream).status == 200
        assert closed(sock, stream)


def test_an_idle_connection_is_closed_after_the_keep_alive_period(running: Running) -> None:
    running.server._public.keep_alive = 0.2
    with connection(running) as (sock, stream):
        sock.sendall(get("/health"))
        assert read_answer(stream).status == 200
        assert closed(sock, stream)  # nothing sent for a while: the server let go
    with connection(running) as (sock, stream):
        sock.sendall(b"GET /health HTTP/1.1\r\nHo")  # a request that never ends
        assert closed(sock, stream)


def test_an_expect_100_continue_is_answered_before_the_body(running: Running) -> None:
    alice = running.enroll()
    request = ocsp_request(alice.certificate, running.authority.ca.intermediate)
    with connection(running) as (sock, stream):
        sock.sendall(
            get(
                "/ocsp",
                "Content-Type: application/ocsp-request",
                f"Content-Length: {len(request)}",
                "Expect: 100-continue",
                method="POST",
            )
        )
        assert stream.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert stream.readline() == b"\r\n"
        sock.sendall(request)
        answer = read_answer(stream)
    assert ocsp.load_der_ocsp_response(answer.body).certificate_status is ocsp.OCSPCertStatus.GOOD


def test_unknown_paths_wrong_methods_and_media_types_are_problems(running: Running) -> None:
    with connection(running) as (sock, stream):
        sock.sendall(get("/sign") + get("/health", method="DELETE"))
        missing, wrong_method = read_answer(stream), read_answer(stream)
        sock.sendall(get("/ocsp") + post_ocsp_raw(b"\x30\x00", "application/json"))
        get_without_request, wrong_type = read_answer(stream), read_answer(stream)
    assert (missing.status, json.loads(missing.body)["type"]) == (
        404,
        "urn:ostiary:error:not-found",
    )
    assert wrong_method.status == 405 and wrong_method.headers["allow"] == "GET, HEAD"
    assert get_without_request.status == 405 and get_without_request.headers["allow"] == "POST"
    assert wrong_type.status == 415
    for answer in (missing, wrong_method, get_without_request, wrong_type):
        assert answer.headers["content-type"] == PROBLEM_JSON


def test_a_database_that_cannot_be_reached_is_a_503_problem(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    def unreachable() -> None:
        raise OperationalError("SELECT 1", {}, Exception("db.internal:5432 refused"))

    monkeypatch.setattr(running.context.crl, "current", unreachable)
    with running.plain() as plain:
        answer = plain.get("/crl")
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "5"
    assert "db.internal" not in answer.text


# --------------------------------------------------------------------------- OCSP cache


@pytest.fixture
def replicas(authority: Authority, provisioners: Provisioners) -> Iterator[tuple[Running, Running]]:
    """Two servers on one database, each with its own OCSP cache and a manual watch."""
    with (
        run_server(authority, provisioners, ocsp_options=NEVER) as a,
        run_server(authority, provisioners, ocsp_options=NEVER) as b,
    ):
        yield a, b


def status_on(running: Running, request: bytes) -> ocsp.OCSPResponse:
    with running.plain() as plain:
        answer = plain.post(
            "/ocsp", content=request, headers={"content-type": "application/ocsp-request"}
        )
    assert answer.status_code == 200
    return ocsp.load_der_ocsp_response(answer.content)


def test_a_revocation_here_shows_at_once_without_waiting_for_the_watch(
    replicas: tuple[Running, Running],
) -> None:
    a, _ = replicas
    alice = a.enroll()
    request = ocsp_request(alice.certificate, a.authority.ca.intermediate)
    assert status_on(a, request).certificate_status is ocsp.OCSPCertStatus.GOOD
    # Revoked in-process, not through the API: the authority tells the cache.
    a.authority.revoke(
        alice.certificate.serial_number, reason=x509.ReasonFlags.superseded, actor="t"
    )
    assert status_on(a, request).certificate_status is ocsp.OCSPCertStatus.REVOKED


def good_on_b_then_revoked_on_a(a: Running, b: Running) -> tuple[bytes, ocsp.OCSPResponse]:
    """A certificate B has answered "good" about, then revoked through A's API: the request,
    and B's first answer."""
    alice = a.enroll()
    request = ocsp_request(alice.certificate, a.authority.ca.intermediate)
    first = status_on(b, request)
    assert first.certificate_status is ocsp.OCSPCertStatus.GOOD
    revoke_by_admin(a, alice)
    assert status_on(a, request).certificate_status is ocsp.OCSPCertStatus.REVOKED
    return request, first


def test_another_replica_keeps_its_answer_until_its_watch_reads_the_revocation(
    replicas: tuple[Running, Running],
) -> None:
    a, b = replicas
    request, first = good_on_b_then_revoked_on_a(a, b)
    # B answers from memory (the same signed bytes) until its watch has polled: the bound
    # on staleness is the watch's interval.
    stale = status_on(b, request)
    assert stale.public_bytes(serialization.Encoding.DER) == first.public_bytes(
        serialization.Encoding.DER
    )
    b.context.ocsp.watch.poll()
    revoked = status_on(b, request)
    assert revoked.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert revoked.revocation_reason is x509.ReasonFlags.key_compromise


def test_without_a_recent_poll_the_cache_is_not_trusted(
    authority: Authority, provisioners: Provisioners
) -> None:
    options = {"watch_interval": 3600.0, "trust_for": 0.2}
    with (
        run_server(authority, provisioners, ocsp_options=options) as a,
        run_server(authority, provisioners, ocsp_options=options) as b,
    ):
        request, _ = good_on_b_then_revoked_on_a(a, b)
        time.sleep(0.3)  # past trust_for with no poll: B reads the store again
        assert status_on(b, request).certificate_status is ocsp.OCSPCertStatus.REVOKED


def test_an_unknown_serial_is_never_kept(replicas: tuple[Running, Running]) -> None:
    a, b = replicas
    certificate = unrecorded_certificate(a.authority, "late@example.com")
    request = ocsp_request(certificate, a.authority.ca.intermediate)
    assert status_on(b, request).certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    # Recorded now, as if issued by replica A: B knows it at the next request, no poll.
    with a.authority.store.transaction() as session:
        CertificateRepository(session).add(certificate, profile="client", provisioner="ops")
    assert status_on(b, request).certificate_status is ocsp.OCSPCertStatus.GOOD


def test_nonces_get_fresh_signatures_from_the_kept_status(
    replicas: tuple[Running, Running],
) -> None:
    a, _ = replicas
    alice = a.enroll()
    issuer = a.authority.ca.intermediate
    plain_request = ocsp_request(alice.certificate, issuer)
    first, second = os.urandom(16), os.urandom(32)
    one = status_on(a, ocsp_request(alice.certificate, issuer, nonce=first))
    two = status_on(a, ocsp_request(alice.certificate, issuer, nonce=second))
    kept = status_on(a, plain_request)
    assert one.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == first
    assert two.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == second
    assert one.signature != two.signature
    with pytest.raises(x509.ExtensionNotFound):
        kept.extensions.get_extension_for_class(x509.OCSPNonce)
    revoke_by_admin(a, alice)
    after = status_on(a, ocsp_request(alice.certificate, issuer, nonce=first))
    assert after.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert after.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == first


def test_get_and_post_of_the_same_request_get_the_same_kept_answer(running: Running) -> None:
    alice = running.enroll()
    request = ocsp_request(alice.certificate, running.authority.ca.intermediate)
    by_post = status_on(running, request)
    with running.plain() as plain:
        by_get = plain.get("/ocsp/" + base64.urlsafe_b64encode(request).decode())
    assert by_get.status_code == 200
    assert by_get.headers["cache-control"] == "no-cache"
    assert by_get.content == by_post.public_bytes(serialization.Encoding.DER)


# --------------------------------------------------------------------------- CRL, uvloop


def test_a_big_crl_is_built_in_a_child_process_with_the_same_entries(
    authority: Authority,
) -> None:
    serials = []
    for index in range(3):
        csr, _ = make_csr(f"gone-{index}@example.com")
        certificate = authority.issue(
            x509.load_pem_x509_csr(csr.encode()),
            Authorization(subject=parse_subject(f"gone-{index}@example.com"), names=()),
            actor="t",
        )
        authority.revoke(certificate.serial_number, reason=x509.ReasonFlags.superseded, actor="t")
        serials.append(certificate.serial_number)
    in_thread = CrlPublisher(authority, process_from=1 << 62)
    in_child = CrlPublisher(authority, process_from=1)
    try:
        here = x509.load_der_x509_crl(in_thread.current().der)
        # The second publisher would serve the first one's CRL, kept in the database for
        # every replica (test_publish.py checks that): drop it, so that the child builds.
        with authority.store.transaction() as session:
            session.execute(delete(LatestCrl))
        there = x509.load_der_x509_crl(in_child.current().der)
    finally:
        in_child.close()
    assert in_child._children is None  # closed
    intermediate = authority.ca.intermediate
    for crl in (here, there):
        assert crl.is_signature_valid(intermediate.public_key())  # type: ignore[arg-type]
        assert sorted(r.serial_number for r in crl) == sorted(serials)
    number = lambda crl: crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number  # noqa: E731
    assert number(there) > number(here)


def test_the_cli_server_serves_the_plain_listener_on_uvloop(
    ca_material: CAMaterial, provisioners: Provisioners, tmp_path: Path
) -> None:
    folder = make_ca_folder(
        ca_material, provisioners, f"sqlite:///{tmp_path / 'ca.db'}", tmp_path / "ca"
    )
    with serving(folder, tmp_path / "serve.log") as server, server.plain() as plain:
        health = plain.get("/health")
        roots = plain.get("/roots")
        garbage = plain.post(
            "/ocsp", content=b"\x00", headers={"content-type": "application/ocsp-request"}
        )
    assert health.json() == {"status": "ok"}
    assert roots.json()["roots"][0].startswith("-----BEGIN CERTIFICATE-----")
    assert garbage.status_code == 200
    parsed = ocsp.load_der_ocsp_response(garbage.content)
    assert parsed.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
