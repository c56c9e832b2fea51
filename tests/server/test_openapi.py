"""The OpenAPI document describes the API as served (and only over HTTPS)."""

from __future__ import annotations

from tests.server.conftest import Running

DOCUMENTED = {
    ("get", "/health"),
    ("get", "/roots"),
    ("get", "/roots/{sha256}"),
    ("get", "/root.crt"),
    ("get", "/intermediate.crt"),
    ("get", "/crl"),
    ("get", "/crl.pem"),
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
    ("get", "/acme/{provisioner}/directory"),
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
