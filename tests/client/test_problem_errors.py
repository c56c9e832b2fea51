"""Problem documents from the CA become the Ostiary error the server raised."""

from __future__ import annotations

from typing import Any

import pytest

from ostiary.client.errors import CAUnavailable, error_from_problem, is_transient
from ostiary.core.errors import (
    AlreadyRevoked,
    BadRequest,
    Conflict,
    NameNotAuthorized,
    NotFound,
    OstiaryError,
    SignerUnavailable,
    TokenReused,
    Unauthorized,
)


def _problem(code: str, status: int, detail: str = "the rule") -> dict[str, Any]:
    return {"type": f"urn:ostiary:error:{code}", "title": "x", "status": status, "detail": detail}


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        pytest.param(403, _problem("name-not-authorized", 403), NameNotAuthorized, id="ok/by-code"),
        pytest.param(409, _problem("token-reused", 409), TokenReused, id="ok/conflict-subclass"),
        pytest.param(
            409, _problem("already-revoked", 409), AlreadyRevoked, id="ok/already-revoked"
        ),
        pytest.param(503, _problem("signer-unavailable", 503), SignerUnavailable, id="ok/503"),
        pytest.param(401, _problem("some-new-code", 401), Unauthorized, id="fallback/unknown-code"),
        pytest.param(404, {"detail": "no"}, NotFound, id="fallback/no-type"),
        pytest.param(409, "not json", Conflict, id="fallback/not-json"),
        pytest.param(418, None, BadRequest, id="fallback/odd-4xx"),
        pytest.param(500, _problem("internal", 500), CAUnavailable, id="fallback/500"),
        pytest.param(502, None, CAUnavailable, id="fallback/proxy-502"),
    ],
)
def test_problem_becomes_the_matching_error(
    status: int, body: Any, expected: type[OstiaryError]
) -> None:
    error = error_from_problem(status, body)
    assert type(error) is expected
    assert error.data["status"] == status


def test_detail_is_kept_for_the_user() -> None:
    error = error_from_problem(403, _problem("name-not-authorized", 403, "dns:evil is not allowed"))
    assert error.detail == "dns:evil is not allowed"


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        pytest.param(CAUnavailable("down"), True, id="ca-down"),
        pytest.param(SignerUnavailable("hsm"), True, id="signer-down"),
        pytest.param(Unauthorized("no"), False, id="refused"),
        pytest.param(TokenReused("again"), False, id="token-reused"),
    ],
)
def test_only_unavailability_is_transient(error: OstiaryError, transient: bool) -> None:
    assert is_transient(error) is transient
