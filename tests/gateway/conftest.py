"""A real CA server (``ostiary ca serve``'s runner in a thread, SQLite) for the gateway and
relying-party tests, certificates issued by it into files, an upstream that echoes what it
received, and our gateway in a thread.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ostiary.authority.authority import Authority
from ostiary.authority.folder import CAConfig, CAPaths, init_ca_folder
from ostiary.authority.root_crl import publish_root_crl
from ostiary.core.issuance import Authorization
from ostiary.core.keys import signature_hash_for
from ostiary.core.lifetime import Lifetime
from ostiary.core.names import parse_san, parse_subject
from ostiary.gateway.config import GatewayConfig
from ostiary.gateway.server import Gateway
from ostiary.tls import TLSIdentity, client_context
from tests.conftest import make_test_ca
from tests.server.conftest import (  # noqa: F401 - fixtures re-exported
    PASSWORD,
    Running,
    ca_material,
    open_authority,
    provisioners,
    run_server,
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_ports_in_a_row(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports (per-worker ports count up)."""
    for _ in range(200):
        first = free_port()
        probes = []
        try:
            for offset in range(count):
                probe = socket.socket()
                probes.append(probe)
                probe.bind(("127.0.0.1", first + offset))
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
        return first
    raise RuntimeError(f"no {count} consecutive free ports on 127.0.0.1")


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


@dataclass
class Issued:
    """A certificate in files: leaf+chain PEM, key PEM (0600), and the objects."""

    certificate: x509.Certificate
    identity: TLSIdentity
    cert_file: Path
    key_file: Path


def _write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def write_identity(folder: Path, name: str, identity: TLSIdentity) -> Issued:
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in identity.chain)
    key = identity.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return Issued(
        identity.certificate,
        identity,
        _write(folder / f"{name}.crt", chain),
        _write(folder / f"{name}.key", key, 0o600),
    )


@dataclass
class CA:
    """Our CA, running, with helpers to issue into files."""

    running: Running
    folder: Path
    ca_file: Path  # root + intermediate
    root_file: Path
    server: Issued
    _count: int = field(default=0)

    @property
    def authority(self) -> Authority:
        return self.running.authority

    @property
    def url(self) -> str:
        return self.running.server.http_url

    def issue(
        self,
        subject: str = "alice",
        sans: tuple[str, ...] = ("email:alice@example.com",),
        *,
        profile: str = "client",
        policies: tuple[str, ...] = (),
        at: datetime | None = None,
        lifetime: timedelta = timedelta(hours=8),
        via: Authority | None = None,
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(parse_subject(subject))
            .sign(key, signature_hash_for(key))
        )
        authority = via or self.authority
        if at is not None:
            authority = Authority(authority.ca, authority.store, clock=lambda: at)
        authorization = Authorization(
            subject=parse_subject(subject),
            names=tuple(parse_san(s) for s in sans),
            profile=profile,
            lifetime=Lifetime(timedelta(minutes=5), lifetime, timedelta(days=30)),
            policies=policies,
        )
        certificate = authority.issue(csr, authorization, actor="test")
        self._count += 1
        identity = TLSIdentity((certificate, authority.issuer.certificate), key)
        return write_identity(self.folder, f"leaf{self._count}", identity)

    def expired(self, subject: str = "old") -> Issued:
        return self.issue(
            subject, at=datetime.now(UTC) - timedelta(days=3), lifetime=timedelta(hours=1)
        )

    def revoke(self, issued: Issued) -> None:
        self.authority.revoke(
            issued.certificate.serial_number, reason=x509.ReasonFlags.key_compromise, actor="test"
        )

    def client(
        self, issued: Issued | None, port: int, host: str = "127.0.0.1", **options: Any
    ) -> httpx.Client:
        """An HTTPS client for https://host:port presenting ``issued`` (if any)."""
        context = client_context(
            [self.authority.ca.root], identity=issued.identity if issued else None
        )
        return httpx.Client(
            base_url=f"https://{host}:{port}", verify=context, timeout=10, **options
        )


@contextmanager
def running_ca(material: Any, accounts: Any, folder: Path, **server_options: Any) -> Iterator[CA]:
    """``material``'s CA served for real (SQLite in ``folder``), with its root CRL published,
    trust files written and a server certificate for the gateway issued."""
    database = f"sqlite:///{folder / 'ca.db'}"
    with (
        open_authority(material, accounts, database, folder / "ca") as authority,
        run_server(authority, accounts, **server_options) as running,
    ):
        live = running.authority
        root_signer = live.ca.load_root_signer(PASSWORD)  # what 'ca serve' does at start
        try:
            publish_root_crl(live.ca, live.store, root_signer, now=datetime.now(UTC), actor="test")
        finally:
            root_signer.close()
        ca_file = _write(
            folder / "ca.pem",
            live.ca.root.public_bytes(serialization.Encoding.PEM)
            + live.ca.intermediate.public_bytes(serialization.Encoding.PEM),
        )
        root_file = _write(
            folder / "root.pem", live.ca.root.public_bytes(serialization.Encoding.PEM)
        )
        ca = CA(running, folder, ca_file, root_file, server=None)  # type: ignore[arg-type]
        ca.server = ca.issue("localhost", ("dns:localhost", "ip:127.0.0.1"), profile="server")
        yield ca


@contextmanager
def running_ca_with_url(accounts: Any, folder: Path, name: str) -> Iterator[CA]:
    """A new CA made with its URL configured (as ``ca init --url`` does), so that its
    certificates name its CRLs and caIssuers on the plain-HTTP listener, served for real."""
    port = free_port()
    material = init_ca_folder(
        CAPaths(folder / "template"),
        CAConfig(name=name, url=f"http://127.0.0.1:{port}"),
        PASSWORD,
        now=datetime.now(UTC) - timedelta(days=1),
    )
    with running_ca(material, accounts, folder, http_address=f"127.0.0.1:{port}") as ca:
        yield ca


@pytest.fixture(scope="module")
def ca(
    ca_material: Any,  # noqa: F811 - the fixture imported above
    provisioners: Any,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[CA]:
    with running_ca(ca_material, provisioners, tmp_path_factory.mktemp("gateway-ca")) as ca:
        yield ca


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> Issued:
    """A client certificate from another CA (same names, same profile)."""
    other = make_test_ca(now=datetime.now(UTC) - timedelta(days=1))
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(parse_subject("alice"))
        .sign(key, signature_hash_for(key))
    )
    from ostiary.core.issuance import issue_certificate

    certificate = issue_certificate(
        csr,
        Authorization(subject=parse_subject("alice"), names=(parse_san("alice@example.com"),)),
        other.issuer,
        now=datetime.now(UTC),
    )
    identity = TLSIdentity((certificate, other.intermediate), key)
    folder = tmp_path_factory.mktemp("foreign")
    _write(  # the other CA's root + intermediate, for tests that trust it
        folder / "ca.pem",
        b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in (other.root, other.intermediate)
        ),
    )
    return write_identity(folder, "foreign", identity)


# --------------------------------------------------------------------------- upstream


class EchoUpstream:
    """An HTTP/1.1 upstream in a thread: answers every request with a JSON echo of what it
    received (method, target, headers, body length, connection number); ``/stream?n=K``
    streams K chunks; a request with ``Upgrade`` gets 101 and then its bytes echoed back."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.context = context  # HTTPS when given
        self.port = 0
        self.connections = 0
        self.seen: list[dict[str, Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    def start(self) -> EchoUpstream:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.port and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.port = server.sockets[0].getsockname()[1]
        await self._stop.wait()
        server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        peer = writer.get_extra_info("peercert")  # the gateway's client certificate, if any
        peer_subject = dict(item for rdn in peer["subject"] for item in rdn) if peer else None
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await self._event(conn, reader)
                if not isinstance(request, h11.Request):
                    return
                length = 0
                while True:
                    event = await self._event(conn, reader)
                    if isinstance(event, h11.Data):
                        length += len(event.data)
                    else:
                        break
                headers = [[k.decode(), v.decode()] for k, v in request.headers]
                record = {
                    "method": request.method.decode(),
                    "target": request.target.decode(),
                    "headers": headers,
                    "body_length": length,
                    "connection": number,
                    "tls_client": peer_subject,
                }
                self.seen.append(record)
                if any(k == b"upgrade" for k, _ in request.headers):
                    writer.write(
                        conn.send(
                            h11.InformationalResponse(
                                status_code=101,
                                headers=[(b"upgrade", b"websocket"), (b"connection", b"upgrade")],
                            )
                        )
                        or b""
                    )
                    while data := await reader.read(65536):
                        writer.write(data)
                        await writer.drain()
                    return
                if request.target.startswith(b"/stream"):
                    chunks = int(request.target.split(b"n=")[1])
                    writer.write(conn.send(h11.Response(status_code=200, headers=[])) or b"")
                    for i in range(chunks):
                        writer.write(conn.send(h11.Data(data=b"x" * 1000 + b"%d\n" % i)) or b"")
                        await writer.drain()
                    writer.write(conn.send(h11.EndOfMessage()) or b"")
                else:
                    body = json.dumps(record).encode()
                    writer.write(
                        conn.send(
                            h11.Response(
                                status_code=200,
                                headers=[
                                    (b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()),
                                ],
                            )
                        )
                        or b""
                    )
                    writer.write(conn.send(h11.Data(data=body)) or b"")
                    writer.write(conn.send(h11.EndOfMessage()) or b"")
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError):
            return
        finally:
            writer.close()

    async def _event(self, conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            conn.receive_data(await reader.read(65536))


@pytest.fixture(scope="module")
def upstream() -> Iterator[EchoUpstream]:
    server = EchoUpstream().start()
    yield server
    server.stop()


def header(record: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in record["headers"] if k.lower() == name.lower()]


# --------------------------------------------------------------------------- our gateway


@contextmanager
def run_gateway(config: GatewayConfig, *, on_uvloop: bool = False) -> Iterator[Gateway]:
    """Our gateway in a thread on a free loopback port, stopped on the way out; on asyncio's
    event loop, or uvloop's (as ``ostiary gateway run`` runs it).
    """
    gateway = Gateway(config)
    run = uvloop.run if on_uvloop else asyncio.run
    thread = threading.Thread(target=run, args=(gateway.serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not gateway.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.01)
    try:
        yield gateway
    finally:
        gateway.request_stop()
        thread.join(10)


def gateway_config(ca: CA, upstream: str, **options: Any) -> GatewayConfig:
    settings: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "upstream": upstream,
        "ca_roots": (ca.ca_file,),
        "cert": ca.server.cert_file,
        "key": ca.server.key_file,
        "revocation_cache_seconds": 0.5,
        "metrics_listen": "127.0.0.1:0",
    }
    settings.update(options)
    return GatewayConfig(**settings)


def served_certificate(
    ca: CA, client: Issued, port: int, host: str = "127.0.0.1"
) -> x509.Certificate:
    """The certificate a TLS server on ``port`` presents to ``client`` right now."""
    context = client_context([ca.authority.ca.root], identity=client.identity)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


GatewayFactory = Callable[..., Gateway]
