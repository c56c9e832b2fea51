"""PKCE (RFC 7636): our verifier/challenge pair, since the provider mock does not check it."""

from __future__ import annotations

import re

import pytest

from ostiary.client.oidc import code_challenge_s256, new_code_verifier
from ostiary.core.errors import BadRequest

#: RFC 7636 appendix B.
RFC_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
RFC_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_challenge_matches_rfc7636_appendix_b() -> None:
    assert code_challenge_s256(RFC_VERIFIER) == RFC_CHALLENGE


def test_new_verifier_is_43_unreserved_characters_and_fresh() -> None:
    first, second = new_code_verifier(), new_code_verifier()
    assert re.fullmatch(r"[A-Za-z0-9\-._~]{43}", first)
    assert first != second
    assert code_challenge_s256(first) != code_challenge_s256(second)


@pytest.mark.parametrize("verifier", ["short", "x" * 129], ids=["fail/too-short", "fail/too-long"])
def test_verifier_outside_43_to_128_characters_is_refused(verifier: str) -> None:
    with pytest.raises(BadRequest):
        code_challenge_s256(verifier)
