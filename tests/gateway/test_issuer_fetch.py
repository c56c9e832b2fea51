"""A gateway that pins only the root: the issuing CA comes from the chain the client sent, or,
when it sent its leaf alone, from the leaf's caIssuers URL (served by our CA server), fetched
once; a missing link is named in the refusal."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import replace

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
from ostiary.tls import TLSIdentity
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


def leaf_only(issued: Issued) -> Issued:
    """``issued`` presenting its leaf alone (no intermediate sent in the handshake)."""
    alone = TLSIdentity(chain=issued.identity.chain[:1], private_key=issued.identity.private_key)
    return replace(issued, identity=alone)


class _Sent:
    """Stands in for the client's TLS connection: the chain it sent (after its leaf)."""

    def __init__(self, *chain: x509.Certificate) -> None:
        self.chain = list(chain[1:])

    def sent_chain(self, leaf: bytes) -> list[x509.Certificate]:
        return list(self.chain)


def test_root_only_gateway_builds_the_path_from_the_chain_the_client_sent(
    ca: CA, upstream: EchoUpstream
) -> None:
    alice = ca.issue("alice", ("email:alice@example.com",))
    bob = ca.issue("bob", ("email:bob@example.com",))
    assert len(alice.identity.chain) == 2  # leaf and issuing CA, as our clients send them
    config = gateway_config(ca, f"http://127.0.0.1:{upstream.port}", ca_roots=(ca.root_file,))
    with run_gateway(config) as gateway:
        for issued in (alice, bob, alice):
            with ca.client(issued, gateway.port) as client:
                assert client.get("/").status_code == 200
        assert gateway.issuers.fetches == 0  # the sent intermediate completed the path
        assert not gateway.metrics.refused


def test_root_only_gateway_refuses_a_leaf_sent_alone_at_the_handshake(
    ca: CA, upstream: EchoUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    """OpenSSL cannot verify it: the issuing CA is neither pinned nor sent. The refusal
    says so, not just "certificate verify failed".
    """
    issued = ca.issue("dan", ("email:dan@example.com",))
    alone = leaf_only(issued)
    config = gateway_config(ca, f"http://127.0.0.1:{upstream.port}", ca_roots=(ca.root_file,))
    with caplog.at_level(logging.INFO), run_gateway(config) as gateway:
        assert refused_count(ca, alone, gateway) == {"handshake": 1}
        assert gateway.issuers.fetches == 0
    refusals = [
        r.getMessage() for r in caplog.records if "refused reason=handshake" in r.getMessage()
    ]
    assert refusals, caplog.text
    assert "unable to get local issuer certificate" in refusals[0], refusals
    assert "did not send its issuing CA" in refusals[0], refusals


def check_paths(
    gateway: Gateway, *leaves: x509.Certificate
) -> list[tuple[x509.Certificate, ...] | str]:
    """``gateway``'s path (or refusal) for each leaf, sent alone, in turn."""

    async def check() -> list[tuple[x509.Certificate, ...] | str]:
        outcomes: list[tuple[x509.Certificate, ...] | str] = []
        try:
            for leaf in leaves:
                der = leaf.public_bytes(serialization.Encoding.DER)
                try:
                    path = await gateway._path(leaf, der, gateway.loaded, _Sent(leaf))  # type: ignore[arg-type]
                except IssuerUnknown as exc:
                    outcomes.append(exc.detail)
                else:
                    outcomes.append(path)
        finally:
            gateway.issuers.close()
            await gateway.revocation.aclose()
        return outcomes

    return asyncio.run(check())


def test_a_missing_issuer_is_fetched_once_from_the_leafs_ca_issuers_url(
    ca: CA, upstream: EchoUpstream
) -> None:
    """Once the handshake passed without the issuing CA at hand (a session resumed, say)."""
    alice = ca.issue("alice", ("email:alice@example.com",)).certificate
    bob = ca.issue("bob", ("email:bob@example.com",)).certificate
    config = gateway_config(ca, f"http://127.0.0.1:{upstream.port}", ca_roots=(ca.root_file,))
    gateway = Gateway(config)
    intermediate, root = ca.authority.ca.intermediate, ca.authority.ca.root
    assert check_paths(gateway, alice, bob, alice) == [
        (alice, intermediate, root),
        (bob, intermediate, root),
        (alice, intermediate, root),
    ]
    assert gateway.issuers.fetches == 1  # one issuer, one fetch, for every leaf it signs


@pytest.mark.parametrize("case", ["fail/unreachable", "fail/not-http", "fail/userinfo"])
def test_the_missing_issuer_is_named(
    ca: CA, upstream: EchoUpstream, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    base = {
        "fail/unreachable": f"http://127.0.0.1:{free_port()}",
        "fail/not-http": "ftp://127.0.0.1",
        "fail/userinfo": f"http://user@127.0.0.1:{free_port()}",
    }[case]
    stranded = ca.issue("dave", ("email:dave@example.com",), via=with_url(ca.authority, base))
    config = gateway_config(ca, f"http://127.0.0.1:{upstream.port}", ca_roots=(ca.root_file,))
    gateway = Gateway(config)
    intermediate = ca.authority.ca.intermediate.subject.rfc4514_string()
    with caplog.at_level(logging.INFO):
        outcomes = check_paths(gateway, stranded.certificate, stranded.certificate)
    assert outcomes == [f"issuer-unknown: {intermediate}"] * 2
    # at most one fetch, however many connections: failures are remembered
    assert gateway.issuers.fetches == (1 if case == "fail/unreachable" else 0)
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
