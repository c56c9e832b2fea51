"""What anonymous callers can make the CA keep: nonces, sign-in flows, approval requests.

Each route that stores something for a caller without a credential stores nothing unless a
provisioner could use it, refuses (429, ``Retry-After``) past a per-address limit (the TCP
peer, never ``X-Forwarded-For``), and keeps a bounded number of rows.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from sqlalchemy import func, select

from ostiary.authority.authority import Authority
from ostiary.core.errors import TooManyRequests
from ostiary.core.lifetime import Lifetime
from ostiary.provisioners import ProvisionerClaims
from ostiary.provisioners.approval import add_approval_provisioner
from ostiary.provisioners.approval_queue import (
    UNOPENED_REQUEST_TTL,
    open_pending_requests,
    request_view,
)
from ostiary.provisioners.attest import AttestProvisioner, add_attest_provisioner
from ostiary.provisioners.attestation_nonces import NONCE_TTL, issue_attestation_nonce
from ostiary.provisioners.est import add_est_provisioner
from ostiary.provisioners.oidc import OIDCProvisioner, add_oidc_provisioner
from ostiary.provisioners.scep import add_scep_provisioner
from ostiary.server.console.sessions import Flow, SessionStore
from ostiary.server.limits import AddressLimiter, Limits
from ostiary.store import AttestationNonce, ConsoleEntry, RequestStatus
from ostiary.tls import client_context
from tests.oidc.conftest import CLIENT_ID, Provider, provider  # noqa: F401 - the fixture
from tests.server.conftest import PASSWORD, Provisioners, Running, make_csr, run_server

CLAIMS = ProvisionerClaims(
    lifetime=Lifetime(timedelta(minutes=5), timedelta(hours=24), timedelta(days=30))
)


def rows(running: Running, model: type) -> int:
    return running.count(model)


def client(running: Running, source: str = "127.0.0.1") -> httpx.Client:
    """An HTTPS client connecting from loopback address ``source``."""
    transport = httpx.HTTPTransport(verify=client_context([running.root]), local_address=source)
    return httpx.Client(base_url=running.server.https_url, transport=transport, timeout=30)


def attestation_root_pem() -> str:
    """A self-signed CA certificate standing for a TPM maker's attestation root."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "TPM Maker Root")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def add_attest(authority: Authority) -> None:
    add_attest_provisioner(
        authority.store,
        AttestProvisioner(
            name="tpm",
            roots_pem=attestation_root_pem(),
            policy_oid="1.3.6.1.4.1.55555.1",
            claims=CLAIMS,
        ),
        now=datetime.now(UTC),
    )


@pytest.fixture
def running(authority: Authority, provisioners: Provisioners) -> Iterator[Running]:
    with run_server(authority, provisioners) as running:
        yield running


# --------------------------------------------------------------------------- nonces


def test_no_nonce_is_stored_on_a_ca_without_an_attest_provisioner(running: Running) -> None:
    with client(running) as api:
        answer = api.post("/attestation/nonce")
    assert answer.status_code == 404, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert "attest" in answer.json()["detail"]
    assert rows(running, AttestationNonce) == 0


def test_a_nonce_is_stored_once_an_attest_provisioner_exists(running: Running) -> None:
    add_attest(running.authority)
    with client(running) as api:
        answer = api.post("/attestation/nonce")
    assert answer.status_code == 201, answer.text
    assert rows(running, AttestationNonce) == 1


def test_nonces_are_limited_per_client_address_not_per_forwarded_header(
    running: Running,
) -> None:
    add_attest(running.authority)
    burst = Limits.default().nonces.burst
    with client(running) as api:
        for _ in range(burst):
            assert api.post("/attestation/nonce").status_code == 201
        made = burst
        for _ in range(5):  # the bucket refills while the burst is sent: a little slack
            refused = api.post("/attestation/nonce")
            if refused.status_code != 201:
                break
            made += 1
        spoofed = api.post("/attestation/nonce", headers={"X-Forwarded-For": "203.0.113.9"})
    assert refused.status_code == 429, refused.text
    assert refused.json()["type"] == "urn:ostiary:error:too-many-requests"
    assert int(refused.headers["retry-after"]) >= 1
    assert spoofed.status_code == 429, "X-Forwarded-For must not reset the limit"
    assert rows(running, AttestationNonce) == made
    # Another address has its own allowance.
    with client(running, "127.0.0.2") as other:
        assert other.post("/attestation/nonce").status_code == 201
    assert rows(running, AttestationNonce) == made + 1


def test_unspent_nonces_are_capped_and_go_when_they_expire(authority: Authority) -> None:
    add_attest(authority)
    now = datetime.now(UTC)
    for _ in range(3):
        issue_attestation_nonce(authority.store, now=now, max_unspent=3)
    with pytest.raises(TooManyRequests) as refused:
        issue_attestation_nonce(authority.store, now=now, max_unspent=3)
    assert 1 <= refused.value.retry_after <= NONCE_TTL.total_seconds()
    later = now + NONCE_TTL + timedelta(seconds=1)
    issue_attestation_nonce(authority.store, now=later, max_unspent=3)
    with authority.store.transaction(read_only=True) as session:
        kept = session.scalar(select(func.count()).select_from(AttestationNonce))
    assert kept == 1  # the three expired unspent ones were pruned


# --------------------------------------------------------------------------- sign-in flows


def test_sign_in_without_an_oidc_provisioner_keeps_no_flow(running: Running) -> None:
    with client(running) as api:
        answer = api.get("/console/oidc/sign-in", params={"provisioner": "nobody"})
    assert answer.status_code == 404, answer.text
    assert rows(running, ConsoleEntry) == 0


def test_sign_ins_are_limited_per_client_address(running: Running) -> None:
    burst = 30
    with client(running) as api:
        answers = [
            api.get("/console/oidc/sign-in", params={"provisioner": "nobody"})
            for _ in range(burst + 1)
        ]
    assert [a.status_code for a in answers[:burst]] == [404] * burst
    assert answers[-1].status_code == 429
    assert int(answers[-1].headers["retry-after"]) >= 1
    with client(running, "127.0.0.2") as other:
        assert other.get("/console/oidc/sign-in", params={"provisioner": "x"}).status_code == 404


def test_sign_in_flows_are_capped_and_expired_ones_pruned(authority: Authority) -> None:
    sessions = SessionStore(authority.store)
    now = datetime.now(UTC)

    def flow(at: datetime) -> Flow:
        return Flow(
            "sso", "s", "n", "v", "https://ca/console/oidc/callback", at + timedelta(minutes=10)
        )

    for _ in range(2):
        sessions.add_flow(flow(now), now=now, max_flows=2)
    with pytest.raises(TooManyRequests):
        sessions.add_flow(flow(now), now=now, max_flows=2)
    later = now + timedelta(minutes=11)
    sessions.add_flow(flow(later), now=later, max_flows=2)
    with authority.store.transaction(read_only=True) as session:
        assert session.scalar(select(func.count()).select_from(ConsoleEntry)) == 1


# --------------------------------------------------------------------------- approval queue


def add_approval(authority: Authority, name: str = "doors") -> None:
    add_approval_provisioner(
        authority.store,
        name,
        claims=CLAIMS,
        now=datetime.now(UTC),
        profile="client",
        require_code=False,
    )


def submit(api: httpx.Client, subject: str) -> httpx.Response:
    csr, _ = make_csr(subject)
    return api.post("/requests", json={"csr": csr, "provisioner": "doors"})


def test_approval_requests_are_limited_per_client_address(running: Running) -> None:
    add_approval(running.authority)
    burst = 40
    with client(running) as api:
        for index in range(burst):
            assert submit(api, f"d{index}").status_code == 202
        refused = submit(api, "one-too-many")
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["retry-after"]) >= 1
    with client(running, "127.0.0.2") as other:
        assert submit(other, "another-address").status_code == 202


def test_a_request_nobody_opened_expires_after_a_day(running: Running) -> None:
    add_approval(running.authority)  # request_ttl: 7 days
    submitted = datetime.now(UTC)
    with client(running) as api:
        body = submit(api, "unopened").json()
    expires_at = datetime.fromisoformat(body["expires_at"])
    assert expires_at <= submitted + UNOPENED_REQUEST_TTL + timedelta(minutes=1)
    after_a_day = submitted + UNOPENED_REQUEST_TTL + timedelta(minutes=1)
    view = request_view(running.authority.store, body["request_id"], now=after_a_day)
    assert view.status == RequestStatus.EXPIRED
    assert UNOPENED_REQUEST_TTL < timedelta(days=7)


def test_a_request_an_officer_opened_waits_the_provisioners_whole_ttl(running: Running) -> None:
    add_approval(running.authority)
    with client(running) as api:
        body = submit(api, "opened").json()
    store = running.authority.store
    shown = open_pending_requests(store, now=datetime.now(UTC))
    assert [v.request_id for v in shown] == [body["request_id"]]
    after_a_day = datetime.fromisoformat(body["expires_at"]) + timedelta(seconds=1)
    view = request_view(store, body["request_id"], now=after_a_day)
    assert view.status == RequestStatus.PENDING
    assert view.expires_at - view.created_at == timedelta(days=7)


# --------------------------------------------------------------------------- the limiter


def test_the_limiter_forgets_the_least_recently_seen_address_first() -> None:
    now = [0.0]
    limiter = AddressLimiter("things", burst=1, interval=60, max_addresses=3, clock=lambda: now[0])
    for address in ("a", "b", "c", "d"):
        limiter.check(address)
    assert len(limiter) == 3
    limiter.check("a")  # forgotten, so a full bucket again
    with pytest.raises(TooManyRequests):
        limiter.check("d")  # remembered: its one request is spent
    now[0] = 60.0
    limiter.check("d")  # refilled after one interval


# --------------------------------------------------------------------------- refusals, polls


def shrink(limiter: AddressLimiter, burst: int = 3) -> None:
    """The server's own limiter, made small (one refill an hour) so a test reaches it."""
    limiter.burst, limiter.interval = burst, 3600.0


def plain(running: Running, source: str = "127.0.0.1") -> httpx.Client:
    """A plain-HTTP client connecting from loopback address ``source``."""
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=running.server.http_url, transport=transport, timeout=30)


def assert_too_many(answer: httpx.Response) -> None:
    assert answer.status_code == 429, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert int(answer.headers["retry-after"]) >= 1


def test_refused_tokens_on_sign_are_limited_per_address_good_ones_never_count(
    running: Running,
) -> None:
    shrink(running.context.limits.failed_tokens)

    def sign(api: httpx.Client, token: str) -> httpx.Response:
        return api.post("/sign", json={"csr": make_csr("alice@example.com")[0], "token": token})

    with client(running) as api:
        token = running.sign_token()
        for _ in range(4):  # more successes than the burst: none counts
            assert sign(api, running.sign_token()).status_code == 201
        assert sign(api, token).status_code == 201
        assert sign(api, token).status_code == 409  # spent: a refusal, counted
        assert sign(api, "not-a-token").status_code == 401
        assert sign(api, running.sign_token(ttl=timedelta(minutes=5))[:-4]).status_code == 401
        refused = sign(api, "not-a-token")
        good_now = sign(api, running.sign_token())
    assert_too_many(refused)
    assert refused.json()["type"] == "urn:ostiary:error:too-many-requests"
    assert_too_many(good_now)  # past the limit, the address is refused before its token
    with client(running, "127.0.0.2") as other:
        assert sign(other, "not-a-token").status_code == 401


def test_refused_bearer_tokens_on_renew_and_revoke_share_the_limit(running: Running) -> None:
    shrink(running.context.limits.failed_tokens)
    bad = {"authorization": "Bearer not-a-token"}
    with client(running) as api:
        answers = [
            api.post("/renew", json={}, headers=bad),
            api.post("/revoke", json={"serial_number": "01"}, headers=bad),
            api.post("/renew", json={}, headers=bad),
        ]
        refused = api.post("/revoke", json={"serial_number": "01"}, headers=bad)
    assert [a.status_code for a in answers] == [401] * 3, [a.text for a in answers]
    assert_too_many(refused)
    with client(running, "127.0.0.2") as other:
        assert other.post("/renew", json={}, headers=bad).status_code == 401


def test_acme_new_nonce_is_limited_per_address(running: Running) -> None:
    shrink(running.context.limits.acme_nonces)
    with client(running) as api:
        answers = [api.head("/acme/nobody/new-nonce") for _ in range(3)]
        refused = api.get("/acme/nobody/new-nonce")
    assert [a.status_code for a in answers] == [404] * 3
    assert refused.status_code == 429, refused.text
    assert refused.json()["type"] == "urn:ietf:params:acme:error:rateLimited"
    assert int(refused.headers["retry-after"]) >= 1
    with client(running, "127.0.0.2") as other:
        assert other.get("/acme/nobody/new-nonce").status_code == 404


def fresh_ocsp_request(running: Running) -> bytes:
    """An OCSP request no kept answer serves (a new nonce each time)."""
    return (
        ocsp.OCSPRequestBuilder()
        .add_certificate(running.authority.issuer.certificate, running.root, hashes.SHA1())
        .add_extension(x509.OCSPNonce(os.urandom(16)), critical=False)
        .build()
        .public_bytes(serialization.Encoding.DER)
    )


def test_ocsp_on_the_plain_http_listener_is_limited_per_address(running: Running) -> None:
    assert Limits.default().ocsp.burst >= 1000  # relying parties poll: generous
    shrink(running.context.limits.ocsp)
    headers = {"content-type": "application/ocsp-request"}

    def ask(api: httpx.Client) -> httpx.Response:
        return api.post("/ocsp", content=fresh_ocsp_request(running), headers=headers)

    with plain(running) as api:
        answers = [ask(api) for _ in range(3)]
        refused = ask(api)
    assert [a.status_code for a in answers] == [200] * 3
    assert_too_many(refused)
    with plain(running, "127.0.0.2") as other:
        assert ask(other).status_code == 200


def test_scep_pki_operations_are_limited_per_address_on_both_listeners(
    authority: Authority, provisioners: Provisioners
) -> None:
    with run_server(authority, provisioners, scep=True) as running:
        shrink(running.context.limits.scep_operations)
        operation = {"operation": "PKIOperation"}
        with plain(running) as api:
            caps = [api.get("/scep/nobody", params={"operation": "GetCACaps"}) for _ in range(5)]
            answers = [api.post("/scep/nobody", params=operation, content=b"x") for _ in range(3)]
        with client(running) as https:  # the same address's bucket, on the HTTPS listener
            refused = https.post("/scep/nobody", params=operation, content=b"x")
        with plain(running, "127.0.0.2") as other:
            elsewhere = other.post("/scep/nobody", params=operation, content=b"x")
    assert {a.status_code for a in caps} == {404}  # GetCACaps is not limited
    assert {a.status_code for a in answers} == {404}
    assert_too_many(refused)
    assert elsewhere.status_code == 404


def test_scep_pki_operations_are_limited_per_provisioner_from_all_addresses(
    authority: Authority, provisioners: Provisioners
) -> None:
    """Many addresses, each within its own allowance, share one SCEP provisioner's budget
    (429 with Retry-After before the message is decrypted); another provisioner is untouched;
    a name that does not exist keeps no state.
    """
    for name in ("mdm", "other"):
        add_scep_provisioner(authority, name, password=PASSWORD, claims=CLAIMS)
    with run_server(authority, provisioners, scep=True) as running:
        limiter = running.context.limits.scep_operations_per_provisioner
        shrink(limiter)
        operation = {"operation": "PKIOperation"}
        with plain(running, "127.0.0.9") as api:
            unknown = api.post("/scep/nobody", params=operation, content=b"x")
        spent = []
        for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
            with plain(running, source) as api:
                spent.append(api.post("/scep/mdm", params=operation, content=b"x"))
        with client(running, "127.0.0.5") as https:  # both listeners, one budget
            refused = https.post("/scep/mdm", params=operation, content=b"x")
        with plain(running, "127.0.0.5") as api:
            elsewhere = api.post("/scep/other", params=operation, content=b"x")
    assert unknown.status_code == 404
    assert {a.status_code for a in spent} == {400}, [a.text for a in spent]  # not CMS
    assert_too_many(refused)
    assert "mdm" in refused.json()["detail"]
    assert elsewhere.status_code == 400
    assert len(limiter) == 2  # mdm and other; never "nobody"


def test_est_enrollments_are_limited_per_provisioner_from_all_addresses(
    authority: Authority, provisioners: Provisioners
) -> None:
    """Enrollments with a credential, from many addresses, share one EST provisioner's budget
    (429 with Retry-After once it is found, before the code is looked at); another
    provisioner is untouched; a name that does not exist keeps no state.
    """
    for name in ("gear", "other"):
        add_est_provisioner(
            authority.store, name, claims=CLAIMS, profile="client", now=datetime.now(UTC)
        )
    csr_pem, _ = make_csr("switch-1")
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    body = base64.b64encode(csr.public_bytes(serialization.Encoding.DER))
    headers = {"content-type": "application/pkcs10"}

    def enroll(source: str, provisioner: str) -> httpx.Response:
        with client(running, source) as api:
            return api.post(
                f"/.well-known/est/{provisioner}/simpleenroll",
                content=body,
                headers=headers,
                auth=("x", "wrong"),
            )

    with run_server(authority, provisioners) as running:
        limiter = running.context.limits.est_enrollments_per_provisioner
        shrink(limiter)
        unknown = enroll("127.0.0.9", "nobody")
        spent = [enroll(source, "gear") for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4")]
        refused = enroll("127.0.0.5", "gear")
        elsewhere = enroll("127.0.0.5", "other")
    assert unknown.status_code == 404, unknown.text
    assert {a.status_code for a in spent} == {401}, [a.text for a in spent]  # a wrong code
    assert_too_many(refused)
    assert "gear" in refused.json()["detail"]
    assert elsewhere.status_code == 401
    assert len(limiter) == 2  # gear and other; never "nobody"


def test_sign_ins_are_limited_per_provisioner_from_all_addresses(
    authority: Authority,
    provisioners: Provisioners,
    provider: Provider,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """Sign-ins started from many addresses, each within its own allowance, share the OIDC
    provisioner's budget (429 with Retry-After, no flow kept); a name that does not exist
    keeps no state.
    """
    secret = tmp_path / "client-secret"
    secret.write_text("console-secret\n")
    secret.chmod(0o600)
    console = OIDCProvisioner(
        name="corp",
        configuration_endpoint=provider.configuration_endpoint,
        client_id=CLIENT_ID,
        claims=CLAIMS,
        client_secret_file=str(secret),
        domains=("corp.example",),
        admins=("admin@corp.example",),
    )
    add_oidc_provisioner(authority.store, console, now=datetime.now(UTC))
    sign_in = "/console/oidc/sign-in"
    with run_server(authority, provisioners) as running:
        limiter = running.context.limits.sign_ins_per_provisioner
        shrink(limiter)
        with client(running, "127.0.0.9") as api:
            unknown = api.get(sign_in, params={"provisioner": "nobody"})
        started = []
        for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
            with client(running, source) as api:
                started.append(api.get(sign_in, params={"provisioner": "corp"}))
        flows = rows(running, ConsoleEntry)
        with client(running, "127.0.0.5") as api:
            refused = api.get(sign_in, params={"provisioner": "corp"})
        flows_after = rows(running, ConsoleEntry)
    assert unknown.status_code == 404
    assert [a.status_code for a in started] == [303] * 3, [a.text for a in started]
    assert_too_many(refused)
    assert "corp" in refused.json()["detail"]
    assert flows_after == flows  # nothing kept for the refused one
    assert len(limiter) == 1  # corp; never "nobody"
