"""An ``ostiary ca serve`` with ``acme`` provisioners, an http-01 responder, JWS helpers.

The server is a real subprocess (``tests.server.processes``) whose http-01 validation
fetches from :data:`Responder.port` (``--acme-http-port``). The names used resolve to
127.0.0.1 through ``/etc/hosts`` (``localhost``, ``vm``, ``runsc``), or are the address
itself.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from joserfc import jws
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, Key, OctKey
from sqlalchemy import func, select

from ostiary.authority.folder import CAMaterial
from ostiary.core.lifetime import Lifetime
from ostiary.provisioners import ProvisionerClaims
from ostiary.provisioners.acme import AcmeProvisioner, add_acme_provisioner
from ostiary.provisioners.acme_eab import NewEabKey, add_eab_key
from ostiary.signers.sealing import Sealer
from ostiary.store import CertificateRecord, Store, sqlite_url_for
from tests.server.conftest import (  # noqa: F401 - fixtures re-exported
    PASSWORD,
    Provisioners,
    ca_material,
    provisioners,
)
from tests.server.processes import CAFolder, ServeProcess, make_ca_folder, start_serve

#: Names that resolve to 127.0.0.1 here (/etc/hosts).
LOOPBACK_NAMES = ("localhost", "vm", "runsc")
#: The hardware-key policy OID of the ``hardware`` provisioner.
HARDWARE_POLICY = "1.3.6.1.4.1.99999.7.1"
CLAIMS = ProvisionerClaims(
    lifetime=Lifetime(timedelta(minutes=5), timedelta(hours=24), timedelta(days=30))
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Responder:
    """An http-01 responder: ``/.well-known/acme-challenge/<token>`` -> key authorization.

    A token in ``held`` is answered only once its event is set (at most 20 s later): a
    validation slower than the challenge POST's wait.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: dict[str, str] = {}
        self.held: dict[str, threading.Event] = {}
        answers, held = self.answers, self.held

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                token = self.path.rsplit("/", 1)[-1]
                if token in held:
                    held[token].wait(20)
                body = answers.get(token)
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class AcmeServer:
    """The running CA and where its ACME directories are."""

    process: ServeProcess
    folder: CAFolder
    root_file: Path
    http_port: int
    responder: Responder | None = None
    stores: list[Store] = field(default_factory=list)

    def directory(self, provisioner: str = "acme") -> str:
        return f"{self.process.https_url}/acme/{provisioner}/directory"

    def client(self) -> httpx.Client:
        return self.process.client()

    def renewed_from(self, certificate: x509.Certificate) -> str | None:
        """The serial the certificate's row says it renewed (its lineage)."""
        store = Store.from_url(self.folder.database_url)
        try:
            with store.transaction(read_only=True) as session:
                return session.scalars(
                    select(CertificateRecord.renewed_from).where(
                        CertificateRecord.serial == f"{certificate.serial_number:x}"
                    )
                ).one()
        finally:
            store.dispose()

    def eab_key(self, provisioner: str = "eab", names: tuple[str, ...] = ()) -> NewEabKey:
        """An EAB key made as ``ca acme eab add`` makes it (sealed with the CA password)."""
        store = Store.from_url(self.folder.database_url)
        try:
            return add_eab_key(
                store, Sealer(PASSWORD), provisioner, names=names, now=datetime.now(UTC)
            )
        finally:
            store.dispose()

    def certificate_count(self) -> int:
        store = Store.from_url(self.folder.database_url)
        try:
            with store.transaction(read_only=True) as session:
                return int(session.scalar(select(func.count()).select_from(CertificateRecord)) or 0)
        finally:
            store.dispose()


def add_acme_provisioners(database_url: str) -> None:
    store = Store.from_url(database_url)
    now = datetime.now(UTC)
    try:
        for provisioner in (
            AcmeProvisioner(
                name="acme",
                claims=CLAIMS,
                challenges=("http-01",),
                profiles=("server", "client"),
                default_profile="server",
            ),
            AcmeProvisioner(
                name="hardware",
                claims=CLAIMS,
                challenges=("http-01",),
                profiles=("client",),
                default_profile="client",
                policy_oid=HARDWARE_POLICY,
            ),
            AcmeProvisioner(
                name="devices",
                claims=CLAIMS,
                challenges=("http-01", "device-attest-01"),
                profiles=("device", "client"),
                default_profile="device",
                policy_oid=HARDWARE_POLICY,
            ),
            AcmeProvisioner(
                name="limited",
                claims=CLAIMS,
                challenges=("http-01",),
                orders_per_hour=2,
                max_pending_authorizations=3,
            ),
            AcmeProvisioner(
                name="eab",
                claims=CLAIMS,
                challenges=("http-01",),
                profiles=("server", "client"),
                default_profile="server",
                require_eab=True,
            ),
            AcmeProvisioner(
                name="clients",
                claims=ProvisionerClaims(lifetime=CLAIMS.lifetime, allowed_names=("vm",)),
                challenges=("http-01",),
                profiles=("client",),
                default_profile="client",
            ),
        ):
            add_acme_provisioner(store, provisioner, now=now)
    finally:
        store.dispose()


@contextmanager
def serving_acme(
    template: CAMaterial,
    recorded: Provisioners,
    folder_path: Path,
    *,
    database_url: str = "",
    options: tuple[str, ...] = (),
) -> Iterator[AcmeServer]:
    """``ca serve`` on a copy of the session CA with the ``acme`` provisioners recorded
    (``options``: more of ``ca serve``'s).
    """
    url = database_url or sqlite_url_for(folder_path / "ca.db")
    folder = make_ca_folder(template, recorded, url, folder_path / "ca")
    add_acme_provisioners(url)
    root_file = folder_path / "root.pem"
    root_file.write_bytes(folder.root.public_bytes(serialization.Encoding.PEM))
    http_port = free_port()
    server = start_serve(
        folder, folder_path / "serve.log", options=("--acme-http-port", str(http_port), *options)
    )
    try:
        yield AcmeServer(server, folder, root_file, http_port)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def acme_server(
    ca_material: CAMaterial,  # noqa: F811 - the fixture imported above
    provisioners: Provisioners,  # noqa: F811 - the fixture imported above
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AcmeServer]:
    with serving_acme(ca_material, provisioners, tmp_path_factory.mktemp("acme-ca")) as server:
        yield server


@pytest.fixture(scope="module")
def own_acme_server(
    ca_material: CAMaterial,  # noqa: F811 - the fixture imported above
    provisioners: Provisioners,  # noqa: F811 - the fixture imported above
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AcmeServer]:
    """A server for one module: for certbot's standalone responder, which takes the
    validation port, and for the per-address limit, which would starve the other tests.
    """
    with serving_acme(ca_material, provisioners, tmp_path_factory.mktemp("own-ca")) as server:
        yield server


@pytest.fixture(scope="session")
def responder(acme_server: AcmeServer) -> Iterator[Responder]:
    responder = Responder(acme_server.http_port)
    acme_server.responder = responder
    try:
        yield responder
    finally:
        responder.close()


# --------------------------------------------------------------------------- raw JWS


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class RawClient:
    """A hand-driven ACME client for requests the libraries would never send."""

    def __init__(self, server: AcmeServer, provisioner: str = "acme") -> None:
        self.http = server.client()
        self.directory: dict[str, Any] = self.http.get(server.directory(provisioner)).json()
        self.key: Key = ECKey.generate_key("P-256")
        self.kid: str | None = None
        self.alg = "ES256"

    def nonce(self) -> str:
        return str(self.http.head(self.directory["newNonce"]).headers["Replay-Nonce"])

    def signed(
        self,
        url: str,
        payload: Any,
        *,
        header: dict[str, Any] | None = None,
        key: Key | None = None,
    ) -> dict[str, str]:
        protected: dict[str, Any] = {"alg": self.alg, "nonce": self.nonce(), "url": url}
        if self.kid is not None:
            protected["kid"] = self.kid
        else:
            protected["jwk"] = (key or self.key).as_dict(private=False)
        protected.update(header or {})
        body = b"" if payload is None else json.dumps(payload).encode()
        registry = jws.JWSRegistry(
            algorithms=["ES256", "EdDSA", "HS256"], strict_check_header=False
        )
        with warnings.catch_warnings():  # joserfc: "EdDSA is deprecated via RFC 9864"
            warnings.simplefilter("ignore", SecurityWarning)
            value = jws.serialize_json(
                {"protected": protected}, body, key or self.key, registry=registry
            )
        return dict(value)

    def post(
        self, url: str, payload: Any, *, content_type: str = "application/jose+json", **kw: Any
    ) -> httpx.Response:
        document = kw.pop("document", None) or self.signed(url, payload, **kw)
        return self.http.post(
            url, content=json.dumps(document).encode(), headers={"Content-Type": content_type}
        )

    def register(self) -> None:
        answer = self.post(self.directory["newAccount"], {"termsOfServiceAgreed": True})
        assert answer.status_code == 201, answer.text
        self.kid = answer.headers["Location"]

    def register_bound(self, kid: str, hmac_key: str) -> httpx.Response:
        """newAccount with an External Account Binding (RFC 8555 section 7.3.4), by hand."""
        url = self.directory["newAccount"]
        key = OctKey.import_key(base64.urlsafe_b64decode(hmac_key + "=" * (-len(hmac_key) % 4)))
        registry = jws.JWSRegistry(algorithms=["HS256"], strict_check_header=False)
        binding = jws.serialize_json(
            {"protected": {"alg": "HS256", "kid": kid, "url": url}},
            json.dumps(self.key.as_dict(private=False)).encode(),
            key,
            registry=registry,
        )
        payload = {"termsOfServiceAgreed": True, "externalAccountBinding": dict(binding)}
        answer = self.post(url, payload)
        if answer.status_code == 201:
            self.kid = answer.headers["Location"]
        return answer

    def on(self, other: AcmeServer) -> RawClient:
        """This account's client for another replica (one origin behind a balancer: here
        the replicas listen on different ports, so the account URL is moved over).
        """
        twin = RawClient(other)
        twin.key = self.key
        if self.kid is not None:
            twin.kid = twin.moved(self.kid)
        return twin

    def moved(self, url: str) -> str:
        """``url`` of another replica, on this client's replica."""
        base = self.directory["newNonce"].split("/acme/", 1)[0]
        return base + "/acme/" + url.split("/acme/", 1)[1]

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def raw(acme_server: AcmeServer) -> Iterator[RawClient]:
    """A registered account's :class:`RawClient` on the session's server."""
    client = RawClient(acme_server)
    client.register()
    try:
        yield client
    finally:
        client.close()


def problem_type(answer: httpx.Response) -> str:
    assert answer.status_code < 500, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json"), answer.text
    return str(answer.json()["type"]).removeprefix("urn:ietf:params:acme:error:")


def csr_der(names: list[str], key: Any, cn: str | None = None) -> bytes:
    from cryptography.hazmat.primitives import hashes

    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)] if cn else [])
    )
    builder = builder.add_extension(
        x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
