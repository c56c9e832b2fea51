"""bench/acme_lean.py, the ACME bench's own client, against a real ``ca serve``.

Its JWS, nonce handling and HTTP/1.1 are written for the bench (certbot's library costs
~10 ms of CPU per order, more than the servers it measures); these tests show that the
server accepts what it sends, that a refused nonce is retried once and a second refusal is
a failed order, and that a failed order is counted, not raised.
"""

from __future__ import annotations

import asyncio
import ipaddress
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.acme.conftest import AcmeServer

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
import acme_lean  # bench/acme_lean.py


def _csr(address: str = "127.0.0.1") -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))])
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    csr = builder.add_extension(san, critical=True).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER)


def _run(server: AcmeServer, concurrency: int, csrs: list[bytes]) -> acme_lean.Outcome:
    return acme_lean.run_orders(
        server.directory(),
        server.root_file,
        concurrency,
        csrs,
        port=server.http_port,
        meter=lambda: (0.0, 0.0),
    )


def test_lean_client_completes_orders_over_kept_alive_tls(own_acme_server: AcmeServer) -> None:
    outcome = _run(own_acme_server, 2, [_csr() for _ in range(4)])
    assert outcome.failures == []
    assert len(outcome.times) == 4


def test_a_failed_order_is_counted_and_the_level_goes_on(own_acme_server: AcmeServer) -> None:
    # A CSR for another address than the order's identifier: finalize is refused.
    outcome = _run(own_acme_server, 1, [_csr("127.0.0.2"), _csr()])
    assert len(outcome.times) == 1
    assert len(outcome.failures) == 1
    assert "badCSR" in outcome.failures[0], outcome.failures[0]


async def _account(server: AcmeServer) -> acme_lean._Account:
    context = acme_lean.ssl.create_default_context(cafile=str(server.root_file))
    connection = acme_lean.Connection(server.directory(), context, post_type=acme_lean.JOSE)
    directory = (await connection.request("GET", server.directory())).json()
    account = acme_lean._Account(directory, connection)
    await account.create()
    return account


@pytest.mark.parametrize(
    ("stale", "refused"),
    [
        pytest.param(1, False, id="ok/bad-nonce-retried-once"),
        pytest.param(2, True, id="fail/bad-nonce-twice"),
    ],
)
def test_a_refused_nonce_is_retried_once(
    own_acme_server: AcmeServer, stale: int, refused: bool
) -> None:
    async def scenario() -> None:
        account = await _account(own_acme_server)
        url = account.directory["newOrder"]
        payload = {"identifiers": [{"type": "ip", "value": "127.0.0.1"}]}
        sent = account.connection.request
        calls = 0

        async def stale_nonces(method: str, target: str, body: bytes = b"") -> object:
            nonlocal calls
            calls += 1
            if calls <= stale:
                account._nonce = "AAAAAAAAAAAAAAAAAAAAAA"  # never issued
                body = account._sign(
                    {"alg": "ES256", "nonce": account._nonce, "url": url, "kid": account._kid},
                    payload,
                )
            return await sent(method, target, body)

        account.connection.request = stale_nonces  # type: ignore[method-assign]
        try:
            if refused:
                with pytest.raises(RuntimeError, match="badNonce"):
                    await account.post(url, payload)
            else:
                answer = await account.post(url, payload)
                assert answer.status == 201
        finally:
            await account.connection.aclose()

    asyncio.run(scenario())
