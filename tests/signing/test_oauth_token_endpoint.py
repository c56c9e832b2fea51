"""A real OAuth 2.0 token endpoint (authlib's authorization server, Flask, HTTPS on loopback)
accepts the CA-signed client assertion (``private_key_jwt``, RFC 7523 section 2.2) and issues
an access token; it refuses a replayed or foreign assertion, as it should.

authlib verifies with joserfc's recommended algorithms (RS256, ES256), so this test asks for
RS256 + ``x5t`` (PS256 is verified with PyJWT in ``test_assertions.py``) and for ES256 with
the P-256 key. The endpoint knows each client by the certificate registered for it, exactly
as an Entra app registration does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flask import Flask
from joserfc.jwk import import_key
from werkzeug.serving import make_server

from ostiary.client.signing import RemoteAssertion
from ostiary.core.issuance import Authorization
from ostiary.core.names import parse_san, parse_subject
from ostiary.tls import TLSIdentity, server_context
from tests.signing.conftest import CLIENT_ID, SigningRunning

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
EDGE_CLIENT_ID = "edge-client-0001"


@dataclass
class Client(ClientMixin):  # type: ignore[misc]
    client_id: str
    certificate: x509.Certificate

    def get_client_id(self) -> str:
        return self.client_id

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "client_assertion_jwt" and endpoint == "token"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"

    def get_allowed_scope(self, scope: str) -> str:
        return scope or ""


class AssertionClientCredentials(ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_assertion_jwt"]  # noqa: RUF012 - authlib's API


@dataclass
class TokenEndpoint:
    url: str
    issued: list[dict[str, Any]]


def _server_identity(server: SigningRunning) -> TLSIdentity:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(parse_subject("token endpoint"))
        .sign(key, hashes.SHA256())
    )
    certificate = server.authority.issue(
        csr,
        Authorization(subject=csr.subject, names=(parse_san("ip:127.0.0.1"),), profile="server"),
        actor="test",
    )
    return TLSIdentity((certificate, server.authority.ca.intermediate), key)


@pytest.fixture(scope="module")
def token_endpoint(signing_server: SigningRunning) -> Iterator[TokenEndpoint]:
    clients = {
        CLIENT_ID: Client(CLIENT_ID, signing_server.certificates["billing"]),
        EDGE_CLIENT_ID: Client(EDGE_CLIENT_ID, signing_server.certificates["edge"]),
    }
    issued: list[dict[str, Any]] = []
    seen_jti: set[str] = set()
    holder: dict[str, str] = {}

    class CertificateAssertion(JWTBearerClientAssertion):  # type: ignore[misc]
        CLIENT_AUTH_METHOD = "client_assertion_jwt"

        def get_audiences(self) -> list[str]:
            return [holder["url"]]

        def validate_jti(self, claims: Any, jti: str) -> bool:
            key = f"{claims['sub']}:{jti}"
            if key in seen_jti:
                return False
            seen_jti.add(key)
            return True

        def resolve_client_public_key(self, client: Client) -> Any:
            pem = client.certificate.public_key().public_bytes(
                Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
            )
            kind = (
                "EC"
                if isinstance(client.certificate.public_key(), ec.EllipticCurvePublicKey)
                else "RSA"
            )
            return import_key(pem, kind)

    app = Flask("token-endpoint")
    app.config["OAUTH2_TOKEN_EXPIRES_IN"] = {"client_credentials": 3600}

    def save_token(token: dict[str, Any], request: Any) -> None:
        issued.append({"client_id": request.client.client_id, **token})

    authorization = AuthorizationServer(
        app, query_client=lambda client_id: clients.get(client_id), save_token=save_token
    )
    authorization.register_grant(AssertionClientCredentials)
    authorization.register_client_auth_method(
        CertificateAssertion.CLIENT_AUTH_METHOD, CertificateAssertion()
    )

    @app.post("/oauth2/v2.0/token")
    def token() -> Any:
        return authorization.create_token_response()

    tls = server_context(_server_identity(signing_server))
    http = make_server("127.0.0.1", 0, app, ssl_context=tls, threaded=True)
    holder["url"] = f"https://127.0.0.1:{http.server_port}/oauth2/v2.0/token"
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield TokenEndpoint(holder["url"], issued)
    finally:
        http.shutdown()
        thread.join(10)


def _allow_audience(server: SigningRunning, key: str, audience: str) -> None:
    from ostiary.store import SigningKeyRepository

    with server.authority.store.transaction() as session:
        record = SigningKeyRepository(session).get(key)
        record.audiences = [*record.audiences, audience]


def _post_assertion(
    server: SigningRunning, endpoint: TokenEndpoint, assertion: str, client_id: str
) -> httpx.Response:
    with httpx.Client(verify=_trust(server), timeout=30) as http:
        return http.post(
            endpoint.url,
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion,
            },
        )


def _trust(server: SigningRunning) -> Any:
    from ostiary.tls import client_context

    return client_context([server.running.root])


@pytest.mark.parametrize(
    ("key", "client_id", "caller", "sans", "alg"),
    [
        pytest.param("billing", CLIENT_ID, "billing-oauth", (), "RS256", id="ok/rs256-x5t"),
        pytest.param(
            "edge", EDGE_CLIENT_ID, "edge-oauth", ("uri:spiffe://lab/edge",), "ES256",
            id="ok/es256",
        ),
    ],
)  # fmt: skip
def test_token_endpoint_issues_an_access_token_for_the_assertion(
    signing_server: SigningRunning,
    token_endpoint: TokenEndpoint,
    key: str,
    client_id: str,
    caller: str,
    sans: tuple[str, ...],
    alg: str,
) -> None:
    _allow_audience(signing_server, key, token_endpoint.url)
    identity = signing_server.caller(caller, sans)
    with RemoteAssertion(
        signing_server.url,
        [signing_server.running.root],
        key=key,
        client_id=client_id,
        audience=token_endpoint.url,
        identity=identity,
        alg=alg,
    ) as source:
        assertion = source()
        answer = _post_assertion(signing_server, token_endpoint, assertion, client_id)
        assert answer.status_code == 200, answer.text
        token = answer.json()
        assert token["token_type"].lower() == "bearer"
        assert token["access_token"]
        assert token_endpoint.issued[-1]["client_id"] == client_id

        # Rejected twins at the token endpoint: the same assertion again (jti replay), and
        # the assertion presented for another client (iss/sub mismatch with the key).
        replay = _post_assertion(signing_server, token_endpoint, assertion, client_id)
        assert replay.status_code in (400, 401)  # authlib: 400 without an Authorization header
        assert replay.json()["error"] == "invalid_client"
    other = CLIENT_ID if client_id == EDGE_CLIENT_ID else EDGE_CLIENT_ID
    with RemoteAssertion(
        signing_server.url,
        [signing_server.running.root],
        key=key,
        client_id=other,
        audience=token_endpoint.url,
        identity=identity,
        alg=alg,
    ) as foreign:
        refused = _post_assertion(signing_server, token_endpoint, foreign(), other)
    assert refused.status_code in (400, 401)  # signed by a key not registered for that client
    assert refused.json()["error"] == "invalid_client"
