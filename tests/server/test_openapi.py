"""The OpenAPI document describes the API as served (and only over HTTPS)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from ostiary.server.openapi import hoist_definitions
from tests.server.conftest import Running

DOCUMENTED = {
    ("get", "/health"),
    ("get", "/roots"),
    ("get", "/roots/{sha256}"),
    ("get", "/root.crt"),
    ("get", "/intermediate.crt"),
    ("get", "/crl"),
    ("get", "/crl.pem"),
    ("get", "/crl/{key_id}"),
    ("get", "/intermediate/{key_id}.crt"),
    ("get", "/intermediates.pem"),
    ("get", "/root.crl"),
    ("post", "/ocsp"),
    ("get", "/ocsp/{encoded}"),
    ("get", "/revocations"),
    ("post", "/sign"),
    ("post", "/renew"),
    ("post", "/revoke"),
    ("get", "/certificates"),
    ("get", "/certificates/{serial}"),
    ("post", "/requests"),
    ("get", "/requests/{request_id}"),
    ("get", "/requests"),
    ("post", "/requests/{request_id}/approve"),
    ("post", "/requests/{request_id}/reject"),
    ("post", "/requests/reject"),
    ("get", "/provisioners/{name}/type"),
    ("get", "/provisioners/{name}"),
    ("post", "/provisioners/{name}/token"),
    ("post", "/provisioners/{name}/sign"),
    ("post", "/signing/keys/{name}/sign"),
    ("post", "/signing/keys/{name}/assertion"),
    ("get", "/signing/metrics"),
    ("post", "/attestation/nonce"),
    ("post", "/attestation/ak"),
    ("post", "/attestation/ak/certificate"),
    ("post", "/provisioners/{name}/attest"),
    ("post", "/ssh/certificate"),
    ("get", "/ssh/ca"),
    ("get", "/ssh/krl"),
    ("get", "/ssh/status/{cert_type}/{serial}"),
    ("post", "/ssh/exchange"),
    ("post", "/ssh/renew/nonce"),
    ("post", "/ssh/renew"),
    ("post", "/ssh/requests"),
    ("get", "/ssh/requests/{request_id}"),
    ("get", "/acme/{provisioner}/directory"),
    ("get", "/acme/{provisioner}/renewal-info/{cert_id}"),
    ("get", "/acme/{provisioner}/new-nonce"),
    ("head", "/acme/{provisioner}/new-nonce"),
    ("post", "/acme/{provisioner}/new-account"),
    ("post", "/acme/{provisioner}/account/{account_id}"),
    ("post", "/acme/{provisioner}/key-change"),
    ("post", "/acme/{provisioner}/new-order"),
    ("post", "/acme/{provisioner}/order/{order_id}"),
    ("post", "/acme/{provisioner}/order/{order_id}/finalize"),
    ("post", "/acme/{provisioner}/orders/{account_id}"),
    ("post", "/acme/{provisioner}/cert/{order_id}"),
    ("post", "/acme/{provisioner}/revoke-cert"),
    ("post", "/acme/{provisioner}/authz/{authz_id}"),
    ("post", "/acme/{provisioner}/chall/{challenge_id}"),
    ("get", "/scep/{name}"),
    ("post", "/scep/{name}"),
    ("get", "/scep/{name}/pkiclient.exe"),
    ("post", "/scep/{name}/pkiclient.exe"),
    ("post", "/scep/{name}/challenge"),
    ("get", "/.well-known/est/{name}/cacerts"),
    ("get", "/.well-known/est/{name}/csrattrs"),
    ("post", "/.well-known/est/{name}/simpleenroll"),
    ("post", "/.well-known/est/{name}/simplereenroll"),
}


def test_openapi_lists_every_endpoint_with_its_bodies(shared_running: Running) -> None:
    with shared_running.client() as client:
        document = client.get("/openapi.json").json()
    operations = {(method, path) for path, item in document["paths"].items() for method in item}
    assert operations == DOCUMENTED
    sign = document["paths"]["/sign"]["post"]
    schema = sign["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["required"]) == {"csr", "token"}
    assert "attestation" in schema["properties"]
    attest = document["paths"]["/provisioners/{name}/attest"]["post"]
    attest_schema = attest["requestBody"]["content"]["application/json"]["schema"]
    assert set(attest_schema["required"]) == {"csr", "attestation"}
    assert (
        "application/ocsp-request" in document["paths"]["/ocsp"]["post"]["requestBody"]["content"]
    )


def _references(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def _resolve(document: dict[str, Any], reference: str) -> object:
    """The node ``reference`` (a JSON pointer within the document, RFC 6901) names."""
    assert reference.startswith("#/"), reference
    node: object = document
    for part in reference.removeprefix("#/").split("/"):
        key = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and key in node, f"{reference} does not resolve"
        node = node[key]
    return node


def test_every_reference_in_the_document_resolves(shared_running: Running) -> None:
    with shared_running.client() as client:
        document = client.get("/openapi.json").json()
    references = set(_references(document))
    for reference in sorted(references):
        assert isinstance(_resolve(document, reference), dict), reference
    assert "#/components/schemas/Attestation" in references
    assert "$defs" not in json.dumps(document)
    attest = document["paths"]["/provisioners/{name}/attest"]["post"]
    body = attest["requestBody"]["content"]["application/json"]["schema"]
    attestation = _resolve(document, body["properties"]["attestation"]["$ref"])
    assert isinstance(attestation, dict) and "properties" in attestation


def test_a_missing_reference_is_caught() -> None:
    document = {"components": {"schemas": {"A": {}}}, "paths": {}}
    assert _resolve(document, "#/components/schemas/A") == {}
    with pytest.raises(AssertionError, match="does not resolve"):
        _resolve(document, "#/$defs/Attestation")


def test_two_different_definitions_of_one_name_are_refused() -> None:
    document = {
        "components": {"schemas": {"Attestation": {"type": "string"}}},
        "paths": {"/x": {"schema": {"$defs": {"Attestation": {"type": "object"}}}}},
    }
    with pytest.raises(ValueError, match="two different schemas are named 'Attestation'"):
        hoist_definitions(document)


def test_every_error_answer_is_documented_as_a_problem(shared_running: Running) -> None:
    """Schemathesis found 400/401/403/404 answers undocumented (the document listed only a
    422 the server never sends): every operation now documents its errors as problems."""
    with shared_running.client() as client:
        document = client.get("/openapi.json").json()
        problem = client.post("/revoke", json={"serial_number": "zz"})
    assert problem.status_code == 400
    assert problem.headers["content-type"] == "application/problem+json"
    schema = document["components"]["schemas"]["Problem"]
    assert set(schema["required"]) <= set(problem.json())
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert "422" not in responses, f"{method} {path}"
            content = responses["default"]["content"]
            assert content == {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            }, f"{method} {path}"
    assert "HTTPValidationError" not in document["components"]["schemas"]
