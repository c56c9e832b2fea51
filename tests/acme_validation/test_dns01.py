"""dns-01 against pebble-challtestsrv's DNS server, and a DNS server that never answers."""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import Iterator

import pytest

from ostiary.acme.validation.base import ChallengeContext, ChallengeFailed, ValidationSettings
from ostiary.acme.validation.dns01 import validate_dns01
from ostiary.acme.validation.keyauth import key_authorization_txt
from tests.acme_validation.conftest import ChallTestSrv


def _context(name: str) -> ChallengeContext:
    token = secrets.token_urlsafe(32)
    return ChallengeContext(
        challenge_type="dns-01",
        identifier_type="dns",
        identifier_value=name,
        token=token,
        key_authorization=f"{token}.{secrets.token_urlsafe(32)}",
    )


def _settings(server: ChallTestSrv) -> ValidationSettings:
    return ValidationSettings(dns_resolver=("127.0.0.1", server.dns_port), timeout=5)


def _fails(context: ChallengeContext, settings: ValidationSettings) -> ChallengeFailed:
    with pytest.raises(ChallengeFailed) as failed:
        asyncio.run(validate_dns01(context, settings))
    return failed.value


def _unique(suffix: str) -> str:
    return f"{secrets.token_hex(4)}.{suffix}"


def test_txt_record_with_the_digest_validates(challtestsrv: ChallTestSrv) -> None:
    context = _context(_unique("dns01.example"))
    challtestsrv.set_txt(f"_acme-challenge.{context.identifier_value}", "some-other-value")
    challtestsrv.set_txt(
        f"_acme-challenge.{context.identifier_value}",
        key_authorization_txt(context.key_authorization),
    )
    result = asyncio.run(validate_dns01(context, _settings(challtestsrv)))
    assert result.attested_spki_der is None
    assert result.hardware_key is False


def test_wildcard_is_proved_at_the_base_name(challtestsrv: ChallTestSrv) -> None:
    base = _unique("wild.example")
    context = _context(f"*.{base}")
    challtestsrv.set_txt(
        f"_acme-challenge.{base}", key_authorization_txt(context.key_authorization)
    )
    asyncio.run(validate_dns01(context, _settings(challtestsrv)))


def test_wrong_txt_value_is_an_incorrect_response(challtestsrv: ChallTestSrv) -> None:
    context = _context(_unique("dns01.example"))
    other = _context(context.identifier_value)
    challtestsrv.set_txt(
        f"_acme-challenge.{context.identifier_value}",
        key_authorization_txt(other.key_authorization),
    )
    failed = _fails(context, _settings(challtestsrv))
    assert failed.problem == "incorrectResponse"
    assert "none of them the digest" in failed.detail


def test_missing_txt_record_is_a_dns_problem(challtestsrv: ChallTestSrv) -> None:
    context = _context(_unique("dns01.example"))
    failed = _fails(context, _settings(challtestsrv))
    assert failed.problem == "dns"
    assert f"_acme-challenge.{context.identifier_value}" in failed.detail


def test_cleared_txt_record_no_longer_validates(challtestsrv: ChallTestSrv) -> None:
    context = _context(_unique("dns01.example"))
    record = f"_acme-challenge.{context.identifier_value}"
    challtestsrv.set_txt(record, key_authorization_txt(context.key_authorization))
    asyncio.run(validate_dns01(context, _settings(challtestsrv)))
    challtestsrv.clear_txt(record)
    assert _fails(context, _settings(challtestsrv)).problem == "dns"


@pytest.fixture
def silent_dns() -> Iterator[int]:
    """A UDP port that receives DNS queries and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        yield int(sink.getsockname()[1])


def test_dns_server_that_does_not_answer_times_out_cleanly(silent_dns: int) -> None:
    context = _context("quiet.example")
    settings = ValidationSettings(dns_resolver=("127.0.0.1", silent_dns), timeout=1.0)
    started = time.monotonic()
    failed = _fails(context, settings)
    assert time.monotonic() - started < 5
    assert failed.problem == "dns"
    assert "no answer from the DNS server in time" in failed.detail


def test_dns01_refuses_an_ip_identifier(challtestsrv: ChallTestSrv) -> None:
    context = ChallengeContext(
        challenge_type="dns-01",
        identifier_type="ip",
        identifier_value="127.0.0.1",
        token="t",
        key_authorization="t.x",
    )
    assert _fails(context, _settings(challtestsrv)).problem == "rejectedIdentifier"
