"""A lean ACME client for bench/acme_orders.py: asyncio, one process, one core's worth of work.

certbot's ``acme`` library in threads spends ~10-11 ms of CPU per order (josepy's objects,
``requests``, the GIL handed between threads), so on the one client core it caps every server
near ~100 orders/s. This client makes the same order with as little as it can:

- one asyncio event loop (uvloop when installed); each of the N workers keeps its own
  HTTP/1.1 keep-alive connection (TLS with the server's root when its directory is https),
  its answers parsed by httptools (no hand-written parsing), reopened if the server closes it
  (bench/http_lean.py, shared with bench/scep_lean.py);
- JWS ES256 built with pyca/cryptography and ``json``: ``jwk`` for newAccount, ``kid`` after;
  the nonce of each request is the ``Replay-Nonce`` of the previous answer, and a
  ``badNonce`` answer is retried once with the nonce it carried;
- the http-01 responder an asyncio server on 127.0.0.1 (backlog 1,024) in the same loop;
- polling every 10 ms, and no poll of the authorization when the challenge POST already
  answered ``valid`` (Ostiary within ``--acme-challenge-wait``, step-ca); no challenge
  POSTed for an authorization the server reused (already ``valid`` when fetched).

An order is the one bench/acme_orders.py times: newOrder (one ``ip`` identifier, 127.0.0.1),
the authorization fetched, the http-01 challenge POSTed, the authorization polled until
valid, finalize with a pre-made CSR, the order polled until valid, the chain downloaded.
Accounts (one per worker) are made before the clock starts.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import httptools
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

sys.path.insert(0, str(Path(__file__).parent))
from http_lean import Connection, Outcome, Response, run_loop, timed_workers  # bench/http_lean.py

POLL = 0.01
ORDER_DEADLINE = 30.0
JOSE = "application/jose+json"
_ECDSA = ec.ECDSA(hashes.SHA256())
_BAD_NONCE = "urn:ietf:params:acme:error:badNonce"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# --------------------------------------------------------------------------- JWS and accounts


class _Account:
    """An ES256 account key, its ``kid`` once made, its connection and its next nonce."""

    def __init__(self, directory: dict[str, Any], connection: Connection) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        numbers = self._key.public_key().public_numbers()
        self._jwk = {
            "crv": "P-256",
            "kty": "EC",
            "x": _b64(numbers.x.to_bytes(32, "big")),
            "y": _b64(numbers.y.to_bytes(32, "big")),
        }
        canonical = json.dumps(self._jwk, sort_keys=True, separators=(",", ":")).encode()
        self.thumbprint = _b64(hashlib.sha256(canonical).digest())  # RFC 7638
        self.directory = directory
        self.connection = connection
        self._kid: str | None = None
        self._nonce: str | None = None

    async def create(self) -> None:
        """newAccount, signed with the ``jwk`` form (RFC 8555 7.3); its Location is the kid."""
        answer = await self.post(self.directory["newAccount"], {"termsOfServiceAgreed": True})
        self._kid = answer.headers[b"location"].decode()

    async def post(self, url: str, payload: dict[str, Any] | None) -> Response:
        """A JWS POST (``payload`` None: POST-as-GET); a badNonce answer is retried once."""
        for attempt in range(2):
            if self._nonce is None:
                fresh = await self.connection.request("GET", self.directory["newNonce"])
                self._nonce = fresh.headers[b"replay-nonce"].decode()
            protected: dict[str, Any] = {"alg": "ES256", "nonce": self._nonce, "url": url}
            if self._kid is None:
                protected["jwk"] = self._jwk
            else:
                protected["kid"] = self._kid
            self._nonce = None
            answer = await self.connection.request("POST", url, self._sign(protected, payload))
            nonce = answer.headers.get(b"replay-nonce")
            self._nonce = nonce.decode() if nonce else None
            if answer.status < 400:
                return answer
            if attempt == 0 and answer.status == 400 and _problem(answer) == _BAD_NONCE:
                continue
            raise RuntimeError(f"{url}: {answer.status} {answer.body[:300]!r}")
        raise AssertionError("unreachable")

    def _sign(self, protected: dict[str, Any], payload: dict[str, Any] | None) -> bytes:
        header = _b64(json.dumps(protected).encode())
        body = "" if payload is None else _b64(json.dumps(payload).encode())
        r, s = decode_dss_signature(self._key.sign(f"{header}.{body}".encode(), _ECDSA))
        signature = _b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
        return json.dumps({"protected": header, "payload": body, "signature": signature}).encode()

    def forget_nonce(self) -> None:
        self._nonce = None


def _problem(answer: Response) -> str | None:
    try:
        kind = answer.json().get("type")
    except ValueError:
        return None
    return kind if isinstance(kind, str) else None


# --------------------------------------------------------------------------- one order


async def _poll(account: _Account, url: str, deadline: float) -> dict[str, Any]:
    while True:
        body = (await account.post(url, None)).json()
        if body.get("status") in ("valid", "invalid"):
            return body
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} still {body.get('status')}")
        await asyncio.sleep(POLL)


async def one_order(account: _Account, tokens: dict[str, bytes], csr_der: bytes) -> None:
    """newOrder, http-01, finalize, download; raises unless a certificate came back."""
    deadline = time.monotonic() + ORDER_DEADLINE
    identifiers = [{"type": "ip", "value": "127.0.0.1"}]
    created = await account.post(account.directory["newOrder"], {"identifiers": identifiers})
    order_url, order = created.headers[b"location"].decode(), created.json()
    for authorization_url in order["authorizations"]:
        authorization = (await account.post(authorization_url, None)).json()
        if authorization.get("status") == "valid":
            # Reused by the server: pebble hands out an account's valid authorization in
            # up to ~5 % of orders here even with PEBBLE_AUTHZREUSE=0. A client answers the
            # challenges of pending ones only (RFC 8555 7.5); a POST to this one is refused
            # ("Cannot update challenge with status valid"), which the library client, which
            # does not look, counts as a failed order.
            continue
        http01 = next(c for c in authorization["challenges"] if c["type"] == "http-01")
        token = http01["token"]
        tokens[token] = f"{token}.{account.thumbprint}".encode("ascii")
        try:
            answered = (await account.post(http01["url"], {})).json()
            if answered.get("status") != "valid":
                answered = await _poll(account, authorization_url, deadline)
        finally:
            tokens.pop(token, None)
        if answered["status"] != "valid":
            raise RuntimeError(f"authorization {answered['status']}: {answered}")
    await account.post(order["finalize"], {"csr": _b64(csr_der)})
    final = await _poll(account, order_url, deadline)
    if final["status"] != "valid":
        raise RuntimeError(f"order {final['status']}: {final.get('error')}")
    chain = await account.post(final["certificate"], None)
    if b"BEGIN CERTIFICATE" not in chain.body:
        raise RuntimeError("no certificate in the download")


# --------------------------------------------------------------------------- http-01 responder


class _Http01(asyncio.Protocol):
    """Answers ``GET /.well-known/acme-challenge/<token>`` from ``tokens`` (httptools)."""

    _PREFIX = b"/.well-known/acme-challenge/"

    def __init__(self, tokens: dict[str, bytes], connections: list[_Http01]) -> None:
        self._tokens = tokens
        connections.append(self)  # the validators keep theirs alive: closed at the end
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.WriteTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if not self.lost.done():
            self.lost.set_result(None)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.close()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_message_complete(self) -> None:
        url, self._url = self._url, b""
        token = url[len(self._PREFIX) :].decode() if url.startswith(self._PREFIX) else ""
        answer = self._tokens.get(token) if token else None
        status = b"200 OK" if answer is not None else b"404 Not Found"
        body = answer or b""
        if self._transport is not None:
            head = b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n" % (status, len(body))
            self._transport.write(head + body)
            if not self._parser.should_keep_alive():
                self._transport.close()


# --------------------------------------------------------------------------- a level


async def _run(
    directory_url: str,
    root_pem: Path,
    concurrency: int,
    csrs_der: list[bytes],
    port: int,
    meter: Callable[[], tuple[float, float]],
) -> Outcome:
    tokens: dict[str, bytes] = {}
    validators: list[_Http01] = []
    listener = await asyncio.get_running_loop().create_server(
        lambda: _Http01(tokens, validators),
        "127.0.0.1",
        port,
        backlog=1024,
        reuse_address=True,
    )
    context = ssl.create_default_context(cafile=str(root_pem))
    accounts: list[_Account] = []
    connections: list[Connection] = []
    try:
        for _ in range(concurrency):
            connection = Connection(directory_url, context, post_type=JOSE)
            connections.append(connection)
            directory = (await connection.request("GET", directory_url)).json()
            account = _Account(directory, connection)
            await account.create()
            accounts.append(account)

        async def one(worker: int, number: int) -> None:
            await one_order(accounts[worker], tokens, csrs_der[number])

        def reset(worker: int) -> None:
            accounts[worker].forget_nonce()
            accounts[worker].connection.close()  # a half-read answer must not be read next

        return await timed_workers(concurrency, len(csrs_der), one, reset, connections, meter)
    finally:
        listener.close()
        for validator in validators:
            validator.close()
        await asyncio.gather(*(connection.aclose() for connection in connections))
        if waiting := [v.lost for v in validators if not v.lost.done()]:
            await asyncio.wait(waiting, timeout=5)
        await listener.wait_closed()


def run_orders(
    directory_url: str,
    root_pem: Path,
    concurrency: int,
    csrs_der: list[bytes],
    *,
    port: int,
    meter: Callable[[], tuple[float, float]],
) -> Outcome:
    """``len(csrs_der)`` orders by ``concurrency`` workers, the http-01 responder on ``port``;
    ``meter`` (the server's CPU seconds, its threads' wait for a core) is read before and after
    the timed part (accounts are made before it).
    """
    return run_loop(_run(directory_url, root_pem, concurrency, csrs_der, port, meter))
