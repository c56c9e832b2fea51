"""A gateway that pins only the root: the issuing CA comes from the leaf's caIssuers URL
(served by our CA server), fetched once; a missing link is named in the refusal."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID

from ostiary.gateway.issuers import ca_issuers_urls
from ostiary.gateway.server import Gateway
from ostiary.gateway.trust import IssuerUnknown
from ostiary.server.runner import with_url
from tests.gateway.conftest import CA, EchoUpstream, Issued, free_port, gateway_config, run_gateway


def refused_count(ca: CA, issued: Issued, gateway: Gateway) -> Counter[str]:
    before = Counter(gateway.metrics.refused)
    try:
        with ca.client(issued, gateway.port) as client:
            status = client.get("/").status_code
    except httpx.TransportError:
        status = 0
    assert status != 200
    deadline = time.monotonic() + 5
    while gateway.metrics.refused == before and time.monotonic() < deadline:
        time.sleep(0.02)
    return Counter(gateway.metrics.refused) - before


def test_our_leaves_name_the_intermediate_the_ca_server_serves(ca: CA) -> None:
    leaf = ca.issue("carol", ("email:carol@example.com",)).certificate
    aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    urls = [
        d.access_location.value
        for d in aia
        if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
    ]
    assert urls == [f"{ca.url}/intermediate.crt"]
    served = httpx.get(urls[0], timeout=10)
    assert served.headers["content-type"] == "application/pkix-cert"
    assert x509.load_der_x509_certificate(served.content) == ca.authority.ca.intermediate


def test_root_only_gateway_accepts_clients_with_the_issuer_fetched_once(
    ca: CA, upstream: EchoUpstream
) -> None:
    alice = ca.issue("alice", ("email:alice@example.com",))
    bob = ca.issue("bob", ("email:bob@example.com",))
    config = gateway_config(ca, f"http://127.0.0.1:{upstream.port}", ca_roots=(ca.root_file,))
    with run_gateway(config) as gateway:
        for issued in (alice, bob, alice):
            with ca.client(issued, gateway.port) as client:
                assert client.get("/").status_code == 200
        assert gateway.issuers.fetches == 1  # one issuer, one fetch, for every leaf it signs
        assert not gateway.metrics.refused


@pytest.mark.parametrize("case", ["fail/unreachable", "fail/not-http", "fail/userinfo"])
def test_root_only_gateway_names_the_missing_issuer(
    ca: CA, upstream: EchoUpstream, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    base = {
        "fail/unreachable": f"http://127.0.0.1:{free_port()}",
        "fail/not-http": "ftp://127.0.0.1",
        "fail/userinfo": f"http://user@127.0.0.1:{free_port()}",
    }[case]
    stranded = ca.issue("dave", ("email:dave@example.com",), via=with_url(ca.authority, base))
    config = gateway_config(
        ca,
        f"http://127.0.0.1:{upstream.port}",
        ca_roots=(ca.root_file,),
        access_log=True,
    )
    intermediate = ca.authority.ca.intermediate.subject.rfc4514_string()
    with caplog.at_level(logging.INFO), run_gateway(config) as gateway:
        assert refused_count(ca, stranded, gateway) == {"issuer-unknown": 1}
        assert refused_count(ca, stranded, gateway) == {"issuer-unknown": 1}
        # at most one fetch, however many connections: failures are remembered
        assert gateway.issuers.fetches == (1 if case == "fail/unreachable" else 0)
    assert f'missing="{intermediate}"' in caplog.text
    assert f"issuer-unknown: {intermediate}" in caplog.text


@pytest.mark.parametrize(
    ("url", "usable"),
    [
        pytest.param("http://ca.lan/intermediate.crt", True, id="ok/http"),
        pytest.param("https://ca.lan/i.crt", True, id="ok/https"),
        pytest.param("file:///etc/passwd", False, id="fail/file"),
        pytest.param("ldap://ca.lan/cn=x", False, id="fail/ldap"),
        pytest.param("http://u:p@ca.lan/i.crt", False, id="fail/userinfo"),
        pytest.param("http:///no-host", False, id="fail/no-host"),
        pytest.param("http://ca.lan/" + "a" * 3000, False, id="fail/too-long"),
    ],
)
def test_only_bounded_http_urls_are_fetched(ca: CA, url: str, usable: bool) -> None:
    leaf = ca.issue("erin", ("email:erin@example.com",)).certificate
    builder = (
        x509.CertificateBuilder()
        .subject_name(leaf.subject)
        .issuer_name(leaf.issuer)
        .public_key(leaf.public_key())
        .serial_number(1)
        .not_valid_before(leaf.not_valid_before_utc)
        .not_valid_after(leaf.not_valid_after_utc)
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier(url),
                    )
                ]
                * 3
            ),
            critical=False,
        )
    )
    certificate = builder.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    assert ca_issuers_urls(certificate) == ([url, url] if usable else [])


class _Sent:
    """What Python 3.13's ``SSLObject.get_unverified_chain()`` gives (DER, leaf first): the
    one piece of the handshake that Python 3.11 cannot show, stood in for here."""

    def __init__(self, *chain: x509.Certificate) -> None:
        self.chain = [c.public_bytes(serialization.Encoding.DER) for c in chain]

    def get_unverified_chain(self) -> list[bytes]:
        return self.chain


@pytest.mark.parametrize("case", ["ok/sent-chain", "fail/sent-nothing"])
def test_the_chain_the_client_sent_completes_the_path_without_a_fetch(
    ca: CA, upstream: EchoUpstream, case: str
) -> None:
    unreachable = with_url(ca.authority, f"http://127.0.0.1:{free_port()}")
    leaf = ca.issue("frank", ("email:frank@example.com",), via=unreachable).certificate
    sent = (leaf, ca.authority.ca.intermediate) if case == "ok/sent-chain" else (leaf,)
    config = gateway_config(ca, f"http://127.0.0.1:{upstream.port}", ca_roots=(ca.root_file,))
    gateway = Gateway(config)
    der = leaf.public_bytes(serialization.Encoding.DER)

    async def check() -> tuple[x509.Certificate, ...] | str:
        try:
            return await gateway._path(leaf, der, gateway.loaded, _Sent(*sent))
        except IssuerUnknown as exc:
            return exc.detail
        finally:
            gateway.issuers.close()
            await gateway.revocation.aclose()

    outcome = asyncio.run(check())
    if case == "ok/sent-chain":
        assert outcome == (leaf, ca.authority.ca.intermediate, ca.authority.ca.root)
        assert gateway.issuers.fetches == 0
    else:
        intermediate = ca.authority.ca.intermediate.subject.rfc4514_string()
        assert outcome == f"issuer-unknown: {intermediate}"
        assert gateway.issuers.fetches == 1
