"""The floor: the least CPU an ACME server written in Python spends on the bench's order.

Not a product and not a peer: a reference for bench/acme_orders.py (``--servers ...,floor``
or ``floor-durable``), so that Ostiary's row can be read as "what Python's stack costs at
the least" plus "what Ostiary does on top". It serves exactly the requests the lean client
makes (bench/acme_lean.py: directory, newNonce, newAccount, newOrder, an authorization, an
http-01 challenge, finalize, the order, the certificate) and does, per order, the work no
ACME server can skip:

- HTTP/1.1 over TLS, kept alive (uvloop's transports, httptools' parser), answers written
  as bytes;
- every POST's JWS parsed, its ``url`` and nonce checked (a nonce is spent once), its ES256
  signature verified with pyca/cryptography (the account key parsed once, at newAccount);
- the http-01 token fetched from 127.0.0.1 over a new TCP connection and compared;
- the CSR parsed, its signature verified and its one IP address checked; the certificate
  built (SAN, EKU, key usage, basic constraints, AKI) and signed with a P-256 CA key.

Nothing else: no policy, limits, audit chain, access log, metrics, expiry, problem documents
(a refusal is a bare 400) or error paths worth the name. With ``--database FILE`` (the
``floor-durable`` server) it also writes what a durable server must before it answers (each
request's nonce exchange, the order and its state changes, the certificate and one audit
row) to SQLite in WAL mode with ``synchronous=FULL``, the statements of concurrent requests
grouped into one transaction and one fsync by a writer thread (a group commit in 40 lines),
and answers a request only once its rows are durable.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import ipaddress
import json
import secrets
import sqlite3
import ssl
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import httptools
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID

_ECDSA = ec.ECDSA(hashes.SHA256())
_LOOPBACK = ipaddress.ip_address("127.0.0.1")
Rows = list[tuple[str, tuple[Any, ...]]]


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Durable:
    """SQLite, WAL, ``synchronous=FULL``; one writer thread commits whatever rows queued."""

    SCHEMA = (
        "create table nonce (value text primary key)",
        "create table acme_order (id text primary key, state text)",
        "create table certificate (serial text primary key, der blob)",
        "create table audit (id integer primary key, event text)",
    )

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("pragma journal_mode=wal")
        self._db.execute("pragma synchronous=full")
        for statement in self.SCHEMA:
            self._db.execute(statement)
        self._queued: list[tuple[Rows, asyncio.Future[None]]] = []
        self._ready = threading.Condition()
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._commit_forever, daemon=True).start()

    async def commit(self, rows: Rows) -> None:
        future = self._loop.create_future()
        with self._ready:
            self._queued.append((rows, future))
            self._ready.notify()
        await future

    def _commit_forever(self) -> None:
        while True:
            with self._ready:
                while not self._queued:
                    self._ready.wait()
                batch, self._queued = self._queued, []
            self._db.execute("begin")
            for rows, _ in batch:
                for statement, values in rows:
                    self._db.execute(statement, values)
            self._db.execute("commit")
            futures = [future for _, future in batch]
            self._loop.call_soon_threadsafe(_resolve, futures)


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


class Floor:
    """The server's state (in memory) and its answers."""

    def __init__(self, base: str, http01_port: int, ca_key: Any, ca_cert: x509.Certificate):
        self.base = base
        self.http01_port = http01_port
        self.ca_key = ca_key
        self.ca_cert = ca_cert
        self.ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
        self.aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
        self.nonces: set[str] = set()
        self.accounts: dict[str, tuple[ec.EllipticCurvePublicKey, str]] = {}
        self.orders: dict[str, dict[str, Any]] = {}
        self.certificates: dict[str, bytes] = {}
        self.durable: Durable | None = None

    def nonce(self, rows: Rows) -> str:
        value = secrets.token_urlsafe(16)
        self.nonces.add(value)
        rows.append(("insert into nonce values (?)", (value,)))
        return value

    def verified(self, body: bytes, url: str, rows: Rows) -> tuple[str, str, Any]:
        """The account id (new for a ``jwk``), its key thumbprint and the payload."""
        jws = json.loads(body)
        protected = json.loads(_b64d(jws["protected"]))
        if protected["url"] != url or protected["alg"] != "ES256":
            raise ValueError("url or alg")
        nonce = protected["nonce"]
        if nonce not in self.nonces:
            raise ValueError("bad nonce")
        self.nonces.discard(nonce)
        rows.append(("delete from nonce where value = ?", (nonce,)))
        if "jwk" in protected:
            jwk = protected["jwk"]
            key = ec.EllipticCurvePublicNumbers(
                int.from_bytes(_b64d(jwk["x"]), "big"),
                int.from_bytes(_b64d(jwk["y"]), "big"),
                ec.SECP256R1(),
            ).public_key()
            canonical = json.dumps(
                {name: jwk[name] for name in ("crv", "kty", "x", "y")},
                sort_keys=True,
                separators=(",", ":"),
            )
            thumbprint = _b64e(hashlib.sha256(canonical.encode()).digest())
            account = secrets.token_urlsafe(8)
            self.accounts[account] = (key, thumbprint)
        else:
            account = protected["kid"].rsplit("/", 1)[1]
        key, thumbprint = self.accounts[account]
        signature = _b64d(jws["signature"])
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        key.verify(der, f"{jws['protected']}.{jws['payload']}".encode(), _ECDSA)
        payload = json.loads(_b64d(jws["payload"])) if jws["payload"] else None
        return account, thumbprint, payload

    def order_json(self, order_id: str) -> dict[str, Any]:
        order = self.orders[order_id]
        body = {
            "status": order["status"],
            "expires": order["expires"],
            "identifiers": order["identifiers"],
            "authorizations": [f"{self.base}/authz/{order_id}"],
            "finalize": f"{self.base}/order/{order_id}/finalize",
        }
        if order["status"] == "valid":
            body["certificate"] = f"{self.base}/cert/{order_id}"
        return body

    def challenge_json(self, order_id: str) -> dict[str, Any]:
        order = self.orders[order_id]
        return {
            "type": "http-01",
            "url": f"{self.base}/chall/{order_id}",
            "token": order["token"],
            "status": "valid" if order["status"] != "pending" else "pending",
        }

    async def answer(self, path: str, body: bytes, rows: Rows) -> tuple[int, dict[str, str], Any]:
        if path == "/directory":
            names = (("newNonce", "new-nonce"), ("newAccount", "new-account"))
            directory = {key: f"{self.base}/{value}" for key, value in names}
            return 200, {}, {**directory, "newOrder": f"{self.base}/new-order"}
        if path == "/new-nonce":
            return 204, {"Replay-Nonce": self.nonce(rows)}, None
        account, thumbprint, payload = self.verified(body, self.base + path, rows)
        headers = {"Replay-Nonce": self.nonce(rows)}
        kind, _, rest = path[1:].partition("/")
        if kind == "new-account":
            headers["Location"] = f"{self.base}/account/{account}"
            return 201, headers, {"status": "valid"}
        if kind == "new-order":
            order_id = secrets.token_urlsafe(12)
            expires = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
            self.orders[order_id] = {
                "status": "pending",
                "identifiers": payload["identifiers"],
                "token": secrets.token_urlsafe(32),
                "account": account,
                "thumbprint": thumbprint,
                "expires": expires,
            }
            rows.append(("insert into acme_order values (?, ?)", (order_id, "pending")))
            headers["Location"] = f"{self.base}/order/{order_id}"
            return 201, headers, self.order_json(order_id)
        order = self.orders[rest.split("/")[0]]
        if order["account"] != account:
            raise ValueError("not this account's order")
        order_id = rest.split("/")[0]
        if kind == "authz":
            authorization = {
                "status": "valid" if order["status"] != "pending" else "pending",
                "identifier": order["identifiers"][0],
                "expires": order["expires"],
                "challenges": [self.challenge_json(order_id)],
            }
            return 200, headers, authorization
        if kind == "chall":
            expected = f"{order['token']}.{order['thumbprint']}".encode()
            if await self.fetch(order["token"]) != expected:
                raise ValueError("http-01 answer")
            order["status"] = "ready"
            rows.append(("update acme_order set state = ? where id = ?", ("ready", order_id)))
            return 200, headers, self.challenge_json(order_id)
        if kind == "order" and rest.endswith("/finalize"):
            if order["status"] != "ready":
                raise ValueError("order not ready")
            self.certificates[order_id] = self.issue(_b64d(payload["csr"]), rows)
            order["status"] = "valid"
            rows.append(("update acme_order set state = ? where id = ?", ("valid", order_id)))
            rows.append(("insert into audit (event) values (?)", (f"issued for {order_id}",)))
            return 200, headers, self.order_json(order_id)
        if kind == "order":
            return 200, headers, self.order_json(order_id)
        if kind == "cert":
            return 200, headers, self.certificates[order_id]
        raise ValueError("no such resource")

    async def fetch(self, token: str) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.http01_port)
        try:
            writer.write(
                f"GET /.well-known/acme-challenge/{token} HTTP/1.1\r\n"
                "Host: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
            )
            response = await reader.read(8192)
        finally:
            writer.close()
        return response.partition(b"\r\n\r\n")[2]

    def issue(self, csr_der: bytes, rows: Rows) -> bytes:
        csr = x509.load_der_x509_csr(csr_der)
        if not csr.is_signature_valid:
            raise ValueError("CSR signature")
        names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if names.get_values_for_type(x509.IPAddress) != [_LOOPBACK]:
            raise ValueError("CSR names")
        now = datetime.now(UTC)
        serial = x509.random_serial_number()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.ca_cert.subject)
            .public_key(csr.public_key())
            .serial_number(serial)
            .not_valid_before(now)
            .not_valid_after(now + timedelta(hours=24))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(_LOOPBACK)]), True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False), True
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(self.aki, False)
            .sign(self.ca_key, hashes.SHA256())
        )
        der = certificate.public_bytes(serialization.Encoding.DER)
        rows.append(("insert into certificate values (?, ?)", (f"{serial:x}", der)))
        return certificate.public_bytes(serialization.Encoding.PEM) + self.ca_pem


_REASONS = {200: b"OK", 201: b"Created", 204: b"No Content", 400: b"Bad Request"}


class _Protocol(asyncio.Protocol):
    def __init__(self, floor: Floor, running: set[asyncio.Task[None]]) -> None:
        self._floor = floor
        self._running = running
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._body: list[bytes] = []
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.close()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        path, body = self._url.decode(), b"".join(self._body)
        self._url, self._body = b"", []
        task = asyncio.get_running_loop().create_task(self._answer(path, body))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _answer(self, path: str, body: bytes) -> None:
        rows: Rows = []
        try:
            status, headers, content = await self._floor.answer(path, body, rows)
        except Exception as exc:  # a reference server: every refusal is a bare 400
            status, headers = 400, {"Replay-Nonce": self._floor.nonce(rows)}
            content = {"type": "urn:ietf:params:acme:error:malformed", "detail": str(exc)}
        if self._floor.durable is not None and rows:
            await self._floor.durable.commit(rows)
        if isinstance(content, bytes):
            data, media = content, b"application/pem-certificate-chain"
        else:
            data = b"" if content is None else json.dumps(content).encode()
            media = b"application/json"
        head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (
            status,
            _REASONS[status],
            media,
            len(data),
        )
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(head + extra + b"\r\n" + data)


async def _serve(args: argparse.Namespace) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.tls_cert, args.tls_key)
    ca_key = serialization.load_pem_private_key(open(args.ca_key, "rb").read(), None)
    ca_cert = x509.load_pem_x509_certificate(open(args.ca_cert, "rb").read())
    floor = Floor(f"https://127.0.0.1:{args.port}", args.http01_port, ca_key, ca_cert)
    if args.database:
        floor.durable = Durable(args.database)
    running: set[asyncio.Task[None]] = set()
    server = await asyncio.get_running_loop().create_server(
        lambda: _Protocol(floor, running), "127.0.0.1", args.port, ssl=context, backlog=1024
    )
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--http01-port", type=int, required=True)
    parser.add_argument("--tls-cert", required=True)
    parser.add_argument("--tls-key", required=True)
    parser.add_argument("--ca-cert", required=True)
    parser.add_argument("--ca-key", required=True)
    parser.add_argument("--database", help="SQLite file: write durably before answering")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # the bench's own loop where uvloop is not installed
        asyncio.run(_serve(args))
    else:
        uvloop.run(_serve(args))


if __name__ == "__main__":
    main()
