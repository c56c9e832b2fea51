from __future__ import annotations

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from ostiary.core.errors import BadRequest, InvalidName
from ostiary.core.lifetime import Lifetime, format_duration, parse_duration
from ostiary.core.names import format_general_name, parse_san, parse_subject


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("alice@example.com", "email:alice@example.com", id="ok/email"),
        pytest.param("10.0.0.1", "ip:10.0.0.1", id="ok/ipv4"),
        pytest.param("::1", "ip:::1", id="ok/ipv6"),
        pytest.param(
            "https://id.example/devices/7", "uri:https://id.example/devices/7", id="ok/uri"
        ),
        pytest.param("spiffe://home/garage", "uri:spiffe://home/garage", id="ok/spiffe-uri"),
        pytest.param("Door.Example.COM", "dns:door.example.com", id="ok/dns-lowercased"),
        pytest.param("*.lab.example", "dns:*.lab.example", id="ok/wildcard"),
        pytest.param("upn:alice@corp.example", "upn:alice@corp.example", id="ok/upn"),
        pytest.param("pid:SN-1234", "pid:SN-1234", id="ok/permanent-identifier"),
        pytest.param("dns:10.0.0.1.example", "dns:10.0.0.1.example", id="ok/prefix-forces-type"),
    ],
)
def test_san_types_are_detected(text: str, expected: str) -> None:
    assert format_general_name(parse_san(text)) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("bad name.example", id="fail/space"),
        pytest.param("-lead.example", id="fail/leading-hyphen"),
        pytest.param("a..b", id="fail/empty-label"),
        pytest.param("foo.*.example", id="fail/inner-wildcard"),
        pytest.param("alice@", id="fail/email-without-domain"),
        pytest.param("a@b@c", id="fail/two-ats"),
        pytest.param("ip:300.1.1.1", id="fail/bad-ip"),
        pytest.param("x" * 64 + ".example", id="fail/long-label"),
    ],
)
def test_malformed_names_are_refused(text: str) -> None:
    with pytest.raises(InvalidName):
        parse_san(text)


@given(
    st.sampled_from(
        [
            "dns:a.example",
            "email:x@y.example",
            "ip:192.0.2.7",
            "uri:urn:x:y",
            "upn:u@d.example",
            "pid:7",
        ]
    )
)
def test_format_and_parse_round_trip(text: str) -> None:
    assert format_general_name(parse_san(format_general_name(parse_san(text)))) == text


def test_subject_bare_common_name_or_rfc4514() -> None:
    assert parse_subject("alice").rfc4514_string() == "CN=alice"
    assert parse_subject("CN=bob,O=Home").rfc4514_string() == "CN=bob,O=Home"
    with pytest.raises(InvalidName):
        parse_subject("")
    with pytest.raises(InvalidName):
        parse_subject("CN=a,=b")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("24h", 86400), ("7d", 604800), ("1h30m", 5400), ("2w", 1209600)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


@pytest.mark.parametrize("text", ["", "abc", "5", "-5m", "0s", "5 parsecs"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(BadRequest):
        parse_duration(text)


def test_lifetime_claims_must_be_ordered() -> None:
    from datetime import timedelta

    with pytest.raises(BadRequest):
        Lifetime(minimum=timedelta(hours=2), default=timedelta(hours=1))


def test_other_names_round_trip_through_x509() -> None:
    name = parse_san("upn:alice@corp.example")
    assert isinstance(name, x509.OtherName)
