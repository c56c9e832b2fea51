"""pebble-challtestsrv (Debian ``pebble``) on loopback: a DNS server and a TLS-ALPN-01
responder that the challenge validators query as they would a device's, steered through
its management API (``/set-txt``, ``/add-tlsalpn01``...). One per test session.

And a TLS server of our own (:class:`AlpnServer`) for the certificates challtestsrv will not
make: without the critical flag, with the obsolete OID, with two SANs.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from asn1crypto.core import OctetString
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ostiary.acme.validation.keyauth import key_authorization_digest
from ostiary.acme.validation.tls_alpn01 import ACME_IDENTIFIER_OID, ACME_TLS_ALPN
from ostiary.tls import TLSIdentity, server_context
from tests.conftest import require_tool


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ChallTestSrv:
    """A running pebble-challtestsrv and its management API."""

    dns_port: int
    tls_port: int
    management: str

    def _post(self, path: str, body: dict[str, str]) -> None:
        response = httpx.post(f"{self.management}/{path}", json=body, timeout=5)
        response.raise_for_status()

    def set_txt(self, host: str, value: str) -> None:
        self._post("set-txt", {"host": host.rstrip(".") + ".", "value": value})

    def clear_txt(self, host: str) -> None:
        self._post("clear-txt", {"host": host.rstrip(".") + "."})

    def add_tls_alpn(self, host: str, key_authorization: str) -> None:
        self._post("add-tlsalpn01", {"host": host, "content": key_authorization})

    def remove_tls_alpn(self, host: str) -> None:
        self._post("del-tlsalpn01", {"host": host})


@pytest.fixture(scope="session")
def challtestsrv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChallTestSrv]:
    tool = require_tool("pebble-challtestsrv")
    dns_port, tls_port, management_port = free_port(), free_port(), free_port()
    log = tmp_path_factory.mktemp("challtestsrv") / "challtestsrv.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [tool, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
             "-dns01", f"127.0.0.1:{dns_port}", "-http01", "", "-https01", "",
             "-tlsalpn01", f"127.0.0.1:{tls_port}",
             "-management", f"127.0.0.1:{management_port}"],
            stdout=out, stderr=out,
        )  # fmt: skip
    try:
        wait_listening(management_port, process, log)
        wait_listening(tls_port, process, log)
        yield ChallTestSrv(dns_port, tls_port, f"http://127.0.0.1:{management_port}")
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"pebble-challtestsrv did not start: {log.read_text()[-2000:]}")
        time.sleep(0.05)


# --------------------------------------------------------------------------- our own responder


def challenge_certificate(
    names: list[x509.GeneralName],
    key_authorization: str,
    *,
    critical: bool = True,
    oid: x509.ObjectIdentifier = ACME_IDENTIFIER_OID,
    digest: bytes | None = None,
) -> TLSIdentity:
    """A self-signed tls-alpn-01 certificate, right by default, wrong as asked."""
    key = ec.generate_private_key(ec.SECP256R1())
    value = OctetString(digest or key_authorization_digest(key_authorization)).dump()
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "tls-alpn-01")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.UnrecognizedExtension(oid, value), critical=critical)
        .sign(key, hashes.SHA256())
    )
    return TLSIdentity((certificate,), key)


@dataclass
class AlpnServer:
    """A TLS server on loopback that presents one certificate and records the SNI it saw."""

    port: int
    server_names: list[str | None] = field(default_factory=list)
    _context: ssl.SSLContext | None = None

    def present(self, identity: TLSIdentity, *, alpn: bool = True) -> None:
        context = server_context(identity)
        if alpn:
            context.set_alpn_protocols([ACME_TLS_ALPN])

        def record(_socket: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
            self.server_names.append(name)

        context.sni_callback = record
        self._context = context

    def serve(self, listener: socket.socket, stop: threading.Event) -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                if self._context is None:
                    continue
                connection.settimeout(5)
                with contextlib.suppress(OSError):
                    with self._context.wrap_socket(connection, server_side=True) as tls:
                        tls.recv(1)


@pytest.fixture
def alpn_server() -> Iterator[AlpnServer]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    server = AlpnServer(int(listener.getsockname()[1]))
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(listener, stop), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
