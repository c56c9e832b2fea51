"""Claims, allowed-name patterns, audiences and requested lifetimes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ostiary.config import Claims
from ostiary.core.errors import BadRequest, LifetimeNotAllowed, NameNotAuthorized
from ostiary.core.lifetime import Lifetime
from ostiary.core.names import parse_san, parse_subject
from ostiary.provisioners import (
    CAIdentity,
    ProvisionerClaims,
    combine_requested,
    normalize_name_pattern,
    parse_not_after,
)
from ostiary.provisioners.patterns import check_allowed_names, default_sans_for, name_matches

from ..conftest import NOW

FINGERPRINT = "ab" * 32


@pytest.mark.parametrize(
    ("pattern", "normalized"),
    [
        pytest.param("*.lab.example", "dns:*.lab.example", id="ok/dns-inferred"),
        pytest.param("*.LAB.example", "dns:*.lab.example", id="ok/dns-lower-cased"),
        pytest.param("*@example.com", "email:*@example.com", id="ok/email-inferred"),
        pytest.param("upn:*@corp.example", "upn:*@corp.example", id="ok/upn-explicit"),
        pytest.param("10.0.0.*", "ip:10.0.0.*", id="ok/ip-inferred"),
        pytest.param("spiffe://lab/*", "uri:spiffe://lab/*", id="ok/uri-inferred"),
        pytest.param("CN:Alice *", "cn:alice *", id="ok/cn-explicit"),
        pytest.param("*.bad.cafe.be", "dns:*.bad.cafe.be", id="ok/hex-letters-are-dns"),
        pytest.param("fd00::*", "ip:fd00::*", id="ok/ipv6-inferred"),
    ],
)
def test_patterns_are_stored_with_their_kind(pattern: str, normalized: str) -> None:
    assert normalize_name_pattern(pattern) == normalized


@pytest.mark.parametrize(
    "pattern",
    [
        pytest.param("", id="fail/empty"),
        pytest.param("dns:", id="fail/kind-without-value"),
        pytest.param("two words.example", id="fail/space"),
    ],
)
def test_malformed_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(BadRequest):
        normalize_name_pattern(pattern)


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        pytest.param("dns:host.lab.example", True, id="ok/subdomain"),
        pytest.param("dns:a.b.lab.example", True, id="ok/deeper-subdomain"),
        pytest.param("dns:HOST.Lab.Example", True, id="ok/dns-case-insensitive"),
        pytest.param("dns:lab.example", False, id="fail/the-domain-itself"),
        pytest.param("dns:evillab.example", False, id="fail/suffix-without-dot"),
        pytest.param("dns:host.lab.example.evil", False, id="fail/suffix-appended"),
        pytest.param("email:host.lab.example", False, id="fail/other-kind-same-text"),
        pytest.param("email:alice@example.com", True, id="ok/email"),
        pytest.param("email:alice@evil.com", False, id="fail/email-other-domain"),
        pytest.param("upn:bob@corp.example", True, id="ok/upn"),
        pytest.param("email:bob@corp.example", False, id="fail/upn-pattern-not-email"),
    ],
)
def test_names_match_patterns_of_their_own_kind(name: str, allowed: bool) -> None:
    patterns = ProvisionerClaims(
        allowed_names=("*.lab.example", "*@example.com", "upn:*@corp.example")
    ).allowed_names
    assert name_matches(name, patterns) is allowed


@given(label=st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True))
def test_a_pattern_never_grants_names_outside_its_domain(label: str) -> None:
    patterns = (normalize_name_pattern("*.lab.example"),)
    assert name_matches(f"dns:{label}.lab.example", patterns)
    assert not name_matches(f"dns:{label}.lab.example.evil", patterns)
    assert not name_matches(f"dns:{label}lab.example", patterns)


@pytest.mark.parametrize(
    ("subject", "sans", "allowed"),
    [
        pytest.param("host.lab.example", ("host.lab.example",), True, id="ok/cn-is-a-san"),
        pytest.param("admin", ("host.lab.example",), False, id="fail/cn-not-a-san"),
        pytest.param("Alice Smith", (), True, id="ok/cn-pattern"),
        pytest.param("Mallory", (), False, id="fail/cn-outside-cn-pattern"),
        pytest.param("host.lab.example", ("evil.example",), False, id="fail/san-outside"),
    ],
)
def test_allowed_names_cover_the_common_name_too(
    subject: str, sans: tuple[str, ...], allowed: bool
) -> None:
    patterns = ProvisionerClaims(allowed_names=("*.lab.example", "cn:Alice *")).allowed_names
    names = [parse_san(s) for s in sans]
    if allowed:
        check_allowed_names(parse_subject(subject), names, patterns)
    else:
        with pytest.raises(NameNotAuthorized):
            check_allowed_names(parse_subject(subject), names, patterns)


def test_without_patterns_any_name_is_allowed() -> None:
    check_allowed_names(parse_subject("anything"), [parse_san("evil.example")], ())


@pytest.mark.parametrize(
    ("subject", "sans"),
    [
        pytest.param("host.lab.example", ("dns:host.lab.example",), id="dns"),
        pytest.param("alice@example.com", ("email:alice@example.com",), id="email"),
        pytest.param("10.0.0.7", ("ip:10.0.0.7",), id="ip"),
        pytest.param("alice", (), id="bare-word"),
        pytest.param("CN=x.example,O=Org", (), id="rfc4514"),
    ],
)
def test_a_bare_subject_implies_its_san(subject: str, sans: tuple[str, ...]) -> None:
    assert default_sans_for(subject) == sans


def test_claims_round_trip_through_the_record_config() -> None:
    claims = ProvisionerClaims(
        lifetime=Lifetime(timedelta(minutes=10), timedelta(hours=8), timedelta(days=2)),
        allow_renewal=False,
        allow_renewal_after_expiry=True,
        renew_after_expiry_window=timedelta(days=3),
        allowed_names=("*.lab.example",),
    )
    assert ProvisionerClaims.from_config(claims.to_config()) == claims


def test_claims_from_the_ca_configuration() -> None:
    claims = ProvisionerClaims.from_ca_claims(
        Claims(max_lifetime=timedelta(days=2), allow_renewal_after_expiry=True)
    )
    assert claims.lifetime.maximum == timedelta(days=2)
    assert claims.allow_renewal_after_expiry


@pytest.mark.parametrize(
    ("provisioner", "refused"),
    [
        pytest.param(Lifetime(maximum=timedelta(days=30)), False, id="ok/same-as-ca"),
        pytest.param(Lifetime(maximum=timedelta(days=31)), True, id="fail/longer-than-ca"),
        pytest.param(
            Lifetime(minimum=timedelta(minutes=1), default=timedelta(hours=1)),
            True,
            id="fail/shorter-minimum-than-ca",
        ),
    ],
)
def test_a_provisioner_may_only_narrow_the_ca_lifetimes(
    provisioner: Lifetime, refused: bool
) -> None:
    ca = ProvisionerClaims()
    if refused:
        with pytest.raises(BadRequest):
            ProvisionerClaims(lifetime=provisioner).check_within(ca)
    else:
        ProvisionerClaims(lifetime=provisioner).check_within(ca)


def test_audience_binds_the_root_fingerprint_and_the_purpose() -> None:
    identity = CAIdentity(root_fingerprint=FINGERPRINT.upper())
    assert identity.audience("sign") == f"urn:ostiary:ca:{FINGERPRINT}:sign"
    assert identity.audience("renew") != identity.audience("revoke")


@pytest.mark.parametrize(
    "fingerprint",
    [pytest.param("ab" * 31, id="fail/short"), pytest.param("zz" * 32, id="fail/not-hex")],
)
def test_a_bad_root_fingerprint_is_refused(fingerprint: str) -> None:
    with pytest.raises(BadRequest):
        CAIdentity(root_fingerprint=fingerprint)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param("24h", timedelta(hours=24), id="ok/duration"),
        pytest.param(
            "2026-12-01T00:00:00Z", datetime(2026, 12, 1, tzinfo=UTC), id="ok/rfc3339-utc"
        ),
        pytest.param(
            "2026-12-01T02:00:00+02:00", datetime(2026, 12, 1, tzinfo=UTC), id="ok/rfc3339-offset"
        ),
    ],
)
def test_not_after_is_a_duration_or_an_rfc3339_time(text: str, value: object) -> None:
    assert parse_not_after(text) == value


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("2026-12-01T00:00:00", id="fail/no-time-zone"),
        pytest.param("2026-13-01T00:00:00Z", id="fail/no-such-month"),
        pytest.param("soon", id="fail/words"),
    ],
)
def test_bad_not_after_is_refused(text: str) -> None:
    with pytest.raises(BadRequest):
        parse_not_after(text)


@pytest.mark.parametrize(
    ("token", "request_value", "result"),
    [
        pytest.param(None, None, None, id="ok/neither"),
        pytest.param(timedelta(hours=2), None, timedelta(hours=2), id="ok/token-only"),
        pytest.param(None, timedelta(hours=3), timedelta(hours=3), id="ok/request-only"),
        pytest.param(
            timedelta(hours=2), timedelta(hours=1), timedelta(hours=1), id="ok/request-shorter"
        ),
        pytest.param(
            NOW + timedelta(hours=2), timedelta(hours=2), timedelta(hours=2), id="ok/equal-ends"
        ),
    ],
)
def test_the_request_may_shorten_the_token_not_after(
    token: timedelta | datetime | None,
    request_value: timedelta | datetime | None,
    result: timedelta | datetime | None,
) -> None:
    assert combine_requested(token, request_value, now=NOW) == result


@pytest.mark.parametrize(
    ("token", "request_value"),
    [
        pytest.param(timedelta(hours=2), timedelta(hours=3), id="fail/longer-duration"),
        pytest.param(timedelta(hours=2), NOW + timedelta(hours=2, seconds=1), id="fail/later-time"),
    ],
)
def test_the_request_may_not_extend_the_token_not_after(
    token: timedelta | datetime, request_value: timedelta | datetime
) -> None:
    with pytest.raises(LifetimeNotAllowed):
        combine_requested(token, request_value, now=NOW)
