"""Every Ostiary error has an HTTP status; the app answers problems even without a server."""

from __future__ import annotations

import asyncio
from http import HTTPStatus

import httpx
import pytest
from fastapi import FastAPI

from ostiary.authority.authority import Authority
from ostiary.core import errors
from ostiary.server import create_app
from ostiary.server.problems import (
    PROBLEM_JSON,
    BodyTooLarge,
    UnsupportedMediaType,
    error_response,
    status_for,
    title_of,
)

EXPECTED = {
    errors.BadRequest: 400,
    errors.MalformedInput: 400,
    errors.InvalidCSR: 400,
    errors.WeakKey: 400,
    errors.InvalidName: 400,
    BodyTooLarge: 413,
    UnsupportedMediaType: 415,
    errors.PolicyDenied: 403,
    errors.NameNotAuthorized: 403,
    errors.LifetimeNotAllowed: 403,
    errors.Unauthorized: 401,
    errors.WrongPassword: 401,
    errors.InvalidCertificate: 401,
    errors.RevokedCertificate: 401,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.AlreadyRevoked: 409,
    errors.TokenReused: 409,
    errors.SignerUnavailable: 503,
    errors.Unavailable: 503,
}


def all_error_classes() -> list[type[errors.OstiaryError]]:
    found, pending = [], [errors.OstiaryError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return [c for c in found if c is not errors.OstiaryError]


@pytest.mark.parametrize("cls", list(EXPECTED), ids=lambda c: c.code)
def test_each_error_has_its_status_and_a_problem_document(cls: type[errors.OstiaryError]) -> None:
    response = error_response(cls("the rule that was broken", serial="0a", secret=b"x"))
    assert status_for(cls("x")) == EXPECTED[cls]
    assert response.status_code == EXPECTED[cls]
    assert response.media_type == PROBLEM_JSON
    body = response.body.decode()
    assert f'"type":"urn:ostiary:error:{cls.code}"' in body
    assert '"serial":"0a"' in body
    assert "secret" not in body  # only simple facts are shown
    if EXPECTED[cls] == 401:
        assert response.headers["www-authenticate"] == "Bearer"


def test_no_error_class_falls_through_to_500() -> None:
    # Made without __init__: some subclasses (a gateway's IssuerUnknown, the client's
    # RequestRejected) take other arguments, and the status follows the class alone.
    for cls in all_error_classes():
        assert status_for(cls.__new__(cls)) != HTTPStatus.INTERNAL_SERVER_ERROR, cls


def test_titles_are_per_type() -> None:
    assert title_of("name-not-authorized") == "Name not authorized"
    assert title_of("internal") == "Internal server error"


def call(app: FastAPI, *requests: tuple[str, str]) -> list[httpx.Response]:
    """Requests straight to the ASGI app (no server, no TLS)."""

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ca.test") as client:
            return [await client.request(method, path, json={}) for method, path in requests]

    return asyncio.run(run())


def test_the_app_can_be_made_from_an_authority_alone(authority: Authority) -> None:
    health, crl, missing, renew = call(
        create_app(authority),
        ("GET", "/health"),
        ("GET", "/crl"),
        ("GET", "/nowhere"),
        ("POST", "/renew"),
    )
    assert health.json() == {"status": "ok"}
    assert crl.headers["content-type"] == "application/pkix-crl"
    assert missing.status_code == 404
    assert missing.headers["content-type"] == PROBLEM_JSON
    assert renew.status_code == 401  # no TLS, no token: no credential


def test_the_public_app_has_no_api_and_no_openapi(authority: Authority) -> None:
    openapi, sign, roots = call(
        create_app(authority, public_only=True),
        ("GET", "/openapi.json"),
        ("POST", "/sign"),
        ("GET", "/roots"),
    )
    assert openapi.status_code == sign.status_code == 404
    assert roots.status_code == 200
