"""A NUL (U+0000) in any id an ACME request carries is the right problem, never a 500.

PostgreSQL text cannot hold a NUL, so an id that reached a query unchecked made the driver
fail (a 500), and some of them (the ``kid``, the nonce) are read before the signature is.
Each request is sent to a server on PostgreSQL and on SQLite.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from ostiary.authority.folder import CAMaterial
from tests.acme.conftest import RawClient, problem_type, serving_acme
from tests.conftest import fresh_postgres_schema
from tests.server.conftest import Provisioners

pytestmark = pytest.mark.slow

ORDER = {"identifiers": [{"type": "dns", "value": "vm"}]}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def client(
    request: pytest.FixtureRequest,
    ca_material: CAMaterial,
    provisioners: Provisioners,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RawClient]:
    folder = tmp_path_factory.mktemp(f"nul-{request.param}")
    with ExitStack() as stack:
        url = ""  # SQLite in the CA folder
        if request.param == "postgresql":
            database = request.getfixturevalue("postgres_database_url")
            url = stack.enter_context(fresh_postgres_schema(database))
        server = stack.enter_context(
            serving_acme(ca_material, provisioners, folder, database_url=url)
        )
        raw = RawClient(server)
        stack.callback(raw.http.close)
        raw.register()
        yield raw


def _base(client: RawClient) -> str:
    return str(client.directory["newOrder"]).rsplit("/", 1)[0]


def test_a_nul_in_the_kid_is_an_unknown_account(client: RawClient) -> None:
    kid = f"{_base(client)}/account/a\x00b"
    answer = client.post(client.directory["newOrder"], ORDER, header={"kid": kid})
    assert answer.status_code == 400, answer.text
    assert problem_type(answer) == "accountDoesNotExist"


@pytest.mark.parametrize("nonce", ["a\x00b", "a b", "abc="])
def test_a_nonce_that_is_not_base64url_is_malformed(client: RawClient, nonce: str) -> None:
    # RFC 8555 section 6.5.2: "the verifier MUST reject the JWS as malformed".
    answer = client.post(client.directory["newOrder"], ORDER, header={"nonce": nonce})
    assert answer.status_code == 400, answer.text
    assert problem_type(answer) == "malformed"


@pytest.mark.parametrize(
    "resource", ["order/a%00b", "authz/a%00b", "chall/a%00b", "cert/a%00b", "orders/a%00b"]
)
def test_a_nul_in_a_resource_id_is_not_found_or_unauthorized(
    client: RawClient, resource: str
) -> None:
    url = f"{_base(client)}/{resource}"
    answer = client.post(url, None)
    assert 400 <= answer.status_code < 500, answer.text
    assert problem_type(answer) in ("malformed", "unauthorized", "accountDoesNotExist")


def test_a_nul_in_a_renewal_info_id_is_malformed(client: RawClient) -> None:
    answer = client.http.get(f"{_base(client)}/renewal-info/a%00b.c%00d")
    assert 400 <= answer.status_code < 500, answer.text


def test_a_nul_in_a_contact_is_refused(client: RawClient) -> None:
    fresh = RawClient.__new__(RawClient)
    fresh.__dict__.update(client.__dict__)
    fresh.kid = None
    fresh.key = type(client.key).generate_key("P-256")
    payload = {"termsOfServiceAgreed": True, "contact": ["mailto:a\x00b@example.com"]}
    answer = fresh.post(client.directory["newAccount"], payload)
    assert problem_type(answer) == "invalidContact", answer.text


def test_a_nul_in_an_eab_kid_is_refused(client: RawClient) -> None:
    fresh = RawClient.__new__(RawClient)
    fresh.__dict__.update(client.__dict__)
    fresh.kid = None
    fresh.key = type(client.key).generate_key("P-256")
    answer = fresh.register_bound("a\x00b", "c2VjcmV0LWtleS1vZi0zMi1ieXRlcy1pbi1iYXNlNjQ")
    assert problem_type(answer) == "unauthorized", answer.text


@pytest.mark.parametrize(
    "payload",
    [
        {"identifiers": [{"type": "dns", "value": "v\x00m"}]},
        {"identifiers": [{"type": "dns\x00", "value": "vm"}]},
        {**ORDER, "profile": "server\x00"},
        {**ORDER, "replaces": "a\x00b.c"},
    ],
    ids=["identifier-value", "identifier-type", "profile", "replaces"],
)
def test_a_nul_in_a_new_order_is_refused(client: RawClient, payload: dict[str, object]) -> None:
    answer = client.post(client.directory["newOrder"], payload)
    assert 400 <= answer.status_code < 500, answer.text
    assert problem_type(answer) in (
        "malformed",
        "rejectedIdentifier",
        "unsupportedIdentifier",
        "invalidProfile",
    )
