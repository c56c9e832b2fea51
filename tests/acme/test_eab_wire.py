"""The External Account Binding JWS (RFC 8555 section 7.3.4): each rule and its twin."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from joserfc import jws
from joserfc.jwk import ECKey, Key, OctKey

from ostiary.acme.eab import parse_binding
from ostiary.acme.errors import AcmeProblem

URL = "https://ca.example/acme/eab/new-account"
HMAC_KEY = b"k" * 32
ACCOUNT = ECKey.generate_key("P-256")


def binding(
    *,
    alg: str = "HS256",
    header: dict[str, Any] | None = None,
    payload: Key = ACCOUNT,
    hmac_key: bytes = HMAC_KEY,
) -> dict[str, str]:
    protected: dict[str, Any] = {"alg": alg, "kid": "kid-1", "url": URL, **(header or {})}
    registry = jws.JWSRegistry(algorithms=["HS256", "HS384", "HS512"], strict_check_header=False)
    body = json.dumps(payload.as_dict(private=False)).encode()
    return dict(
        jws.serialize_json(
            {"protected": protected}, body, OctKey.import_key(hmac_key), registry=registry
        )
    )


def unsigned(header: dict[str, Any]) -> dict[str, str]:
    """A binding whose header says ``header`` (with kid and url), its MAC left as it was."""
    protected = {"kid": "kid-1", "url": URL, **header}
    encoded = base64.urlsafe_b64encode(json.dumps(protected).encode()).rstrip(b"=").decode()
    return {**binding(), "protected": encoded}


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_a_binding_verifies_with_each_mac(alg: str) -> None:
    parsed = parse_binding(binding(alg=alg), url=URL)
    assert parsed.kid == "kid-1"
    parsed.verify(HMAC_KEY, ACCOUNT)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        pytest.param(binding(header={"url": URL + "x"}), "unauthorized", id="fail/url"),
        pytest.param(binding(header={"nonce": "n"}), "malformed", id="fail/nonce"),
        pytest.param(binding(header={"kid": ""}), "malformed", id="fail/empty-kid"),
        pytest.param(unsigned({"alg": "none"}), "badSignatureAlgorithm", id="fail/none"),
        pytest.param(unsigned({"alg": "RS256"}), "badSignatureAlgorithm", id="fail/rs256"),
        pytest.param({"protected": "e30"}, "malformed", id="fail/shape"),
        pytest.param({"protected": "!!", "payload": "", "signature": ""}, "malformed",
                     id="fail/header"),
    ],
)  # fmt: skip
def test_a_bad_binding_is_refused_before_any_key_is_read(value: object, problem: str) -> None:
    with pytest.raises(AcmeProblem) as refused:
        parse_binding(value, url=URL)
    assert refused.value.acme_type == problem


@pytest.mark.parametrize(
    ("made", "account"),
    [
        pytest.param(binding(hmac_key=b"x" * 32), ACCOUNT, id="fail/other-mac-key"),
        pytest.param(binding(), ECKey.generate_key("P-256"), id="fail/other-account-key"),
    ],
)
def test_a_binding_for_another_key_or_by_another_mac_is_unauthorized(
    made: dict[str, str], account: Key
) -> None:
    parsed = parse_binding(made, url=URL)
    with pytest.raises(AcmeProblem) as refused:
        parsed.verify(HMAC_KEY, account)
    assert refused.value.acme_type == "unauthorized"
