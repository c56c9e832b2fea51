"""When a certificate is due: renew-at, expires-in, jitter bounds, and the option parser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ostiary.client.renewal import (
    JITTER_FRACTION,
    RenewalPolicy,
    jitter_draw,
    parse_renewal_policy,
)
from ostiary.core.errors import BadRequest
from ostiary.core.names import parse_subject

START = datetime(2026, 11, 1, tzinfo=UTC)
END = START + timedelta(days=30)
LIFETIME = END - START


def _certificate(not_before: datetime, not_after: datetime) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = parse_subject("renewal-test")
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )


def test_default_is_due_when_a_third_of_the_lifetime_is_left() -> None:
    policy = RenewalPolicy()
    assert policy.due_at(START, END, draw=0.0) == START + LIFETIME * 2 / 3


@pytest.mark.parametrize(
    ("expires_in", "renew_at", "due"),
    [
        pytest.param(None, None, START + timedelta(days=20), id="default/two-thirds"),
        pytest.param(None, "75%", START + timedelta(days=22, hours=12), id="renew-at/75%"),
        pytest.param("25%", None, START + timedelta(days=22, hours=12), id="expires-in/25%"),
        pytest.param("2d", None, END - timedelta(days=2), id="expires-in/duration"),
        pytest.param("60d", None, START, id="expires-in/longer-than-lifetime-is-due-at-once"),
        pytest.param(None, "0%", START, id="renew-at/0%-always-due"),
        pytest.param(None, "100%", END, id="renew-at/100%-at-the-end"),
    ],
)
def test_options_give_the_due_time(
    expires_in: str | None, renew_at: str | None, due: datetime
) -> None:
    policy = parse_renewal_policy(expires_in, renew_at)
    assert policy.due_at(START, END, draw=0.0) == due


@pytest.mark.parametrize(
    ("expires_in", "renew_at"),
    [
        pytest.param("2d", "50%", id="fail/both"),
        pytest.param(None, "66", id="fail/renew-at-without-percent"),
        pytest.param(None, "150%", id="fail/over-100%"),
        pytest.param(None, "-5%", id="fail/negative"),
        pytest.param("soon", None, id="fail/not-a-duration"),
        pytest.param("abc%", None, id="fail/not-a-number"),
    ],
)
def test_bad_options_are_refused(expires_in: str | None, renew_at: str | None) -> None:
    with pytest.raises(BadRequest):
        parse_renewal_policy(expires_in, renew_at)


@pytest.mark.parametrize("draw", [0.0, 0.25, 0.5, 0.999999])
def test_jitter_only_moves_renewal_earlier_and_by_at_most_the_bound(draw: float) -> None:
    policy = RenewalPolicy()
    exact = policy.due_at(START, END, draw=0.0)
    due = policy.due_at(START, END, draw=draw)
    assert exact - LIFETIME * JITTER_FRACTION <= due <= exact


def test_jitter_never_moves_renewal_before_not_before() -> None:
    policy = parse_renewal_policy("29d23h")
    assert policy.due_at(START, END, draw=0.999) == START


def test_jitter_draw_is_fixed_per_certificate_and_spreads_a_fleet() -> None:
    certificates = [_certificate(START, END) for _ in range(20)]
    draws = [jitter_draw(c) for c in certificates]
    assert all(0 <= d < 1 for d in draws)
    assert draws == [jitter_draw(c) for c in certificates]
    assert len(set(draws)) == len(draws)
    due_times = {RenewalPolicy().certificate_due_at(c) for c in certificates}
    assert len(due_times) == len(certificates)


def test_needs_renewal_agrees_with_the_due_time() -> None:
    certificate = _certificate(START, END)
    policy = RenewalPolicy()
    due = policy.certificate_due_at(certificate)
    assert not policy.needs_renewal(certificate, now=due - timedelta(seconds=1))
    assert policy.needs_renewal(certificate, now=due)
    assert policy.needs_renewal(certificate, now=END + timedelta(days=1))


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"renew_at": None}, id="fail/neither"),
        pytest.param({"renew_at": 0.5, "remaining": timedelta(hours=1)}, id="fail/both"),
        pytest.param({"renew_at": 1.5}, id="fail/fraction-over-one"),
        pytest.param({"jitter_fraction": 1.0}, id="fail/jitter-whole-lifetime"),
    ],
)
def test_inconsistent_policies_cannot_be_made(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"."):
        RenewalPolicy(**kwargs)  # type: ignore[arg-type]
