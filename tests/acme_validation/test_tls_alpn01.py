"""tls-alpn-01 (RFC 8737) against pebble-challtestsrv's responder and, for the certificates
it will not make, a TLS server of ours.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from ostiary.acme.validation.base import ChallengeContext, ChallengeFailed, ValidationSettings
from ostiary.acme.validation.tls_alpn01 import (
    OBSOLETE_ACME_IDENTIFIER_OID,
    check_challenge_certificate,
    validate_tls_alpn01,
)
from tests.acme_validation.conftest import (
    AlpnServer,
    ChallTestSrv,
    challenge_certificate,
    free_port,
)


def _context(kind: str, value: str) -> ChallengeContext:
    token = secrets.token_urlsafe(32)
    return ChallengeContext(
        challenge_type="tls-alpn-01",
        identifier_type=kind,
        identifier_value=value,
        token=token,
        key_authorization=f"{token}.{secrets.token_urlsafe(32)}",
    )


def _settings(tls_port: int, dns_port: int | None = None) -> ValidationSettings:
    resolver = ("127.0.0.1", dns_port) if dns_port is not None else None
    return ValidationSettings(tls_port=tls_port, dns_resolver=resolver, timeout=5)


def _fails(context: ChallengeContext, settings: ValidationSettings) -> ChallengeFailed:
    with pytest.raises(ChallengeFailed) as failed:
        asyncio.run(validate_tls_alpn01(context, settings))
    return failed.value


def test_challtestsrv_certificate_validates(challtestsrv: ChallTestSrv) -> None:
    name = f"{secrets.token_hex(4)}.alpn.example"
    context = _context("dns", name)
    challtestsrv.add_tls_alpn(name, context.key_authorization)
    settings = _settings(challtestsrv.tls_port, challtestsrv.dns_port)
    try:
        asyncio.run(validate_tls_alpn01(context, settings))
    finally:
        challtestsrv.remove_tls_alpn(name)


def test_challtestsrv_certificate_for_another_key_authorization_is_refused(
    challtestsrv: ChallTestSrv,
) -> None:
    name = f"{secrets.token_hex(4)}.alpn.example"
    context = _context("dns", name)
    challtestsrv.add_tls_alpn(name, _context("dns", name).key_authorization)
    try:
        failed = _fails(context, _settings(challtestsrv.tls_port, challtestsrv.dns_port))
    finally:
        challtestsrv.remove_tls_alpn(name)
    assert failed.problem == "incorrectResponse"
    assert "SHA-256 of this challenge's key authorization" in failed.detail


def test_our_server_with_a_right_certificate_validates(alpn_server: AlpnServer) -> None:
    context = _context("dns", "localhost")
    alpn_server.present(
        challenge_certificate([x509.DNSName("localhost")], context.key_authorization)
    )
    asyncio.run(validate_tls_alpn01(context, _settings(alpn_server.port)))
    assert alpn_server.server_names == ["localhost"]


def test_ip_identifier_sends_the_reverse_dns_name_and_needs_an_ip_san(
    alpn_server: AlpnServer,
) -> None:
    context = _context("ip", "127.0.0.1")
    address = ipaddress.ip_address("127.0.0.1")
    alpn_server.present(challenge_certificate([x509.IPAddress(address)], context.key_authorization))
    asyncio.run(validate_tls_alpn01(context, _settings(alpn_server.port)))
    assert alpn_server.server_names == ["1.0.0.127.in-addr.arpa"]
    alpn_server.present(
        challenge_certificate([x509.DNSName("127.0.0.1.example")], context.key_authorization)
    )
    assert _fails(context, _settings(alpn_server.port)).problem == "incorrectResponse"


@pytest.mark.parametrize(
    ("kind", "detail"),
    [
        pytest.param("not-critical", "not marked critical", id="fail/not-critical"),
        pytest.param("obsolete-oid", "obsolete draft OID", id="fail/obsolete-oid"),
        pytest.param("two-sans", "exactly one subjectAltName, it has 2", id="fail/two-sans"),
        pytest.param("other-name", "not localhost", id="fail/other-name"),
        pytest.param("wrong-digest", "SHA-256 of this challenge", id="fail/wrong-digest"),
    ],
)
def test_wrong_challenge_certificate_is_refused(
    alpn_server: AlpnServer, kind: str, detail: str
) -> None:
    context = _context("dns", "localhost")
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    keyauth = context.key_authorization
    identity = {
        "not-critical": lambda: challenge_certificate(names, keyauth, critical=False),
        "obsolete-oid": lambda: challenge_certificate(
            names, keyauth, oid=OBSOLETE_ACME_IDENTIFIER_OID
        ),
        "two-sans": lambda: challenge_certificate([*names, x509.DNSName("other.example")], keyauth),
        "other-name": lambda: challenge_certificate([x509.DNSName("other.example")], keyauth),
        "wrong-digest": lambda: challenge_certificate(names, keyauth, digest=bytes(32)),
    }[kind]()
    alpn_server.present(identity)
    failed = _fails(context, _settings(alpn_server.port))
    assert failed.problem == "incorrectResponse"
    assert detail in failed.detail


def test_server_without_acme_alpn_is_a_tls_problem(alpn_server: AlpnServer) -> None:
    context = _context("dns", "localhost")
    alpn_server.present(
        challenge_certificate([x509.DNSName("localhost")], context.key_authorization), alpn=False
    )
    failed = _fails(context, _settings(alpn_server.port))
    assert failed.problem == "tls"
    assert "acme-tls/1" in failed.detail


def test_closed_port_is_a_connection_problem() -> None:
    context = _context("dns", "localhost")
    failed = _fails(context, _settings(free_port()))
    assert failed.problem == "connection"
    assert "cannot connect" in failed.detail


def test_wildcard_cannot_use_tls_alpn01() -> None:
    context = _context("dns", "*.example.com")
    assert _fails(context, _settings(443)).problem == "rejectedIdentifier"


@given(der=st.binary(max_size=400))
@settings(max_examples=200, deadline=None)
def test_any_presented_bytes_fail_cleanly(der: bytes) -> None:
    with pytest.raises(ChallengeFailed) as failed:
        check_challenge_certificate(der, "dns", "localhost", "t.x")
    assert failed.value.problem == "incorrectResponse"
