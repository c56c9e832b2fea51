"""Schemathesis against a live ``ca serve`` on SQLite and PostgreSQL (tests/server/api_fuzz.py).

A bounded run for the suite; ``fuzz/api.py --examples N`` runs the same campaign longer.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from ostiary.authority.folder import CAMaterial
from tests.server.api_fuzz import APPROVALS, Target, fuzz_api, load_schema, prepare_target
from tests.server.conftest import Provisioners, make_csr
from tests.server.processes import make_ca_folder, serving

EXAMPLES = 6
#: Operations the credentials must take past the 401s in every run.
DEEP = {
    "POST /sign",
    "POST /renew",
    "GET /certificates",
    "GET /requests",
    "POST /requests",
    "POST /revoke",
    "GET /certificates/{serial}",
}


@pytest.fixture(scope="module")
def target(
    ca_material: CAMaterial,
    provisioners: Provisioners,
    module_database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Target]:
    folder = tmp_path_factory.mktemp("fuzz")
    ca = make_ca_folder(ca_material, provisioners, module_database_url, folder / "ca")
    with serving(ca, folder / "serve.log") as server:
        yield prepare_target(server, ca, provisioners)


def test_every_operation_is_fuzzed_with_its_bodies(target: Target) -> None:
    schema = load_schema(target, examples=1)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 33
    attest = next(o for o in operations if o.path == "/provisioners/{name}/attest")
    assert attest.body, "the attest body must resolve (it pointed at #/$defs/Attestation)"


def test_the_api_survives_a_stateful_fuzzing_run(target: Target) -> None:
    result = fuzz_api(target, examples=EXAMPLES)
    assert not result.failures, "\n\n".join(f"{k}\n{v}" for k, v in result.failures.items())
    assert result.cases > 33 * EXAMPLES // 2
    reached = {label for label, codes in result.statuses.items() if min(codes) < 300}
    missed = {label: sorted(result.statuses.get(label, ())) for label in DEEP - reached}
    assert not missed, f"never answered 2xx (codes seen): {missed}"
    log = (target.server.log).read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param("/reject", {"reason": "\x00\xb4"}, id="fail/reject-reason"),
        pytest.param("/reject", {"reason": "spam"}, id="ok/reject-reason"),
    ],
)
def test_a_nul_in_a_body_is_a_400_and_changes_nothing(
    target: Target, path: str, body: dict[str, str]
) -> None:
    """Found by the fuzzing run on PostgreSQL: a NUL in a rejection reason was a 500."""
    context = ssl.create_default_context(cafile=target.root_file)
    context.load_cert_chain(target.cert_file, target.key_file)
    csr, _ = make_csr("nul@example.com", ["uri:urn:fuzz:nul"])
    with httpx.Client(base_url=target.server.https_url, verify=context) as client:
        submitted = client.post("/requests", json={"csr": csr, "provisioner": APPROVALS})
        assert submitted.status_code == 202, submitted.text
        request_id = submitted.json()["request_id"]
        noted = client.post(
            "/requests", json={"csr": csr, "provisioner": APPROVALS, "note": "a\x00b"}
        )
        assert noted.status_code == 400, noted.text
        answer = client.post(f"/requests/{request_id}{path}", json=body)
        status = client.get(f"/requests/{request_id}").json()["status"]
    if "\x00" in body["reason"]:
        assert answer.status_code == 400, answer.text
        assert answer.json()["detail"] == (
            "the request body must not contain a NUL character (\\u0000)"
        )
        assert status == "pending"
    else:
        assert answer.status_code == 200, answer.text
        assert status == "rejected"


#: Requests whose parameters carry a NUL (U+0000): PostgreSQL text cannot hold one, so a
#: parameter that reaches a query unchecked was a 500 there (the fuzzing found ``q``).
NUL_PROBES = [
    ("GET", "/certificates?q=a%00b", "admin"),
    ("GET", "/certificates/%00", "admin"),
    ("GET", "/requests/%00", "none"),
    ("GET", "/provisioners/a%00b/type", "none"),
    ("GET", "/roots/%00", "none"),
    ("GET", "/console/certificates?q=a%00b", "officer"),
    ("GET", "/console/certificates?profile=a%00b", "officer"),
    ("GET", "/console/certificates/%00", "officer"),
    ("GET", "/console/requests/%00", "officer"),
    ("GET", "/acme/a%00b/directory", "none"),
    ("GET", "/acme/a%00b/new-nonce", "none"),
    ("GET", "/scep/a%00b?operation=GetCACaps", "none"),
    ("GET", "/scep/a%00b/pkiclient.exe?operation=GetCACert", "none"),
    ("GET", "/.well-known/est/a%00b/cacerts", "none"),
    ("GET", "/crl/%00", "none"),
    ("GET", "/intermediate/%00", "none"),
    ("GET", "/status/x509/%00", "none"),
    ("GET", "/provisioners/a%00b", "none"),
    ("POST", "/signing/keys/a%00b/sign", "officer"),
    ("POST", "/provisioners/a%00b/attest", "none"),
    ("POST", "/scep/a%00b/challenge", "none"),
    ("GET", "/enroll/oidc/sign-in?provisioner=a%00b", "none"),
    ("GET", "/enroll/oidc/callback?state=a%00b&code=c%00d", "none"),
    ("GET", "/console/oidc/sign-in?provisioner=a%00b", "none"),
    ("GET", "/console/oidc/callback?state=a%00b&code=c%00d", "none"),
    ("GET", "/scep/a%00b?operation=GetCACaps", "plain"),
    ("GET", "/crl/%00", "plain"),
]


@pytest.mark.parametrize(("method", "url", "who"), NUL_PROBES)
def test_a_nul_in_a_parameter_is_refused_never_a_server_error(
    target: Target, method: str, url: str, who: str
) -> None:
    context = ssl.create_default_context(cafile=str(target.root_file))
    if who == "officer":
        context.load_cert_chain(target.cert_file, target.key_file)
    headers = {}
    if who == "admin":
        provisioners = target.provisioners
        token = provisioners.admins.mint_admin_token(
            provisioners.admins_key, ca=target.ca.identity, now=datetime.now(UTC)
        )
        headers["Authorization"] = f"Bearer {token}"
    base = target.server.http_url if who == "plain" else target.server.https_url
    with httpx.Client(base_url=base, verify=context, timeout=60) as client:
        answer = client.request(method, url, headers=headers)
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:300])
