"""Why the revocation status is unknown is said plainly: a CA name that does not resolve."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from ostiary.core.issuance import CAUrls
from ostiary.gateway.revocation import RevocationChecker, RevocationUnknown
from tests.conftest import make_test_ca
from tests.gateway.conftest import free_port


def _status_of_a_certificate_naming(base: str) -> None:
    now = datetime.now(UTC)
    urls = CAUrls(crl=f"{base}/crl", ocsp=f"{base}/ocsp", ca_issuers=f"{base}/ca.crt")
    ca = make_test_ca(now=now, urls=urls)
    leaf, _ = ca.issue("phone", ("email:me@home.example",), now=now)
    checker = RevocationChecker("auto", cache_seconds=30, grace_seconds=0, timeout_seconds=5)
    asyncio.run(checker.is_revoked(leaf, ca.intermediate))


def test_a_ca_name_that_does_not_resolve_is_named_in_the_reason() -> None:
    # .invalid never resolves (RFC 6761): the door guide's old ca.home.example did the same.
    with pytest.raises(RevocationUnknown) as refused:
        _status_of_a_certificate_naming("http://ca.home.invalid:8080")
    assert "the name 'ca.home.invalid' did not resolve (DNS:" in str(refused.value)


def test_a_ca_that_resolves_but_does_not_answer_is_not_blamed_on_dns() -> None:
    with pytest.raises(RevocationUnknown) as refused:
        _status_of_a_certificate_naming(f"http://127.0.0.1:{free_port()}")
    assert "did not resolve" not in str(refused.value)
    assert "ConnectError" in str(refused.value)
