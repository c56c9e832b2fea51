"""SCEP while the audit log cannot be written (issue 19): a PKCSReq, a RenewalReq and a
request for the approval queue are answered HTTP 503 ``audit-unavailable`` with Retry-After,
and nothing is recorded: no certificate, no spent challenge, no transaction. The same
message (same transactionID) then succeeds once the fault is gone.

Why HTTP 503 and not a CertRep FAILURE: FAILURE is final for a SCEP client (certmonger marks
the request rejected, an MDM shows an error and a new challenge is needed), while the refusal
is temporary; an HTTP error is what clients retry (certmonger: "CA unreachable", try later).
PENDING would not do either: it promises a transaction the CA did not record.
"""

from __future__ import annotations

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select

from ostiary.store import ScepChallenge, ScepTransaction
from tests.scep.client import Request, make_csr, send
from tests.scep.conftest import ScepServer
from tests.scep.test_scep_messages import PATH, PENDING, RENEWAL_REQ, SUCCESS, _key, _ra, _request
from tests.server.audit_fault import assert_audit_unavailable, audit_entries, audit_refused


def _post(http: httpx.Client, path: str, request: Request) -> httpx.Response:
    return http.post(
        f"{path}?operation=PKIOperation",
        content=request.der(),
        headers={"Content-Type": "application/x-pki-message"},
    )


def _recorded(server: ScepServer) -> tuple[int, int, int, int]:
    """(certificates, transactions, spent challenges, audit entries)."""
    with server.store() as store, store.transaction(read_only=True) as session:
        transactions = session.scalar(select(func.count()).select_from(ScepTransaction))
        spent = session.scalar(
            select(func.count())
            .select_from(ScepChallenge)
            .where(ScepChallenge.used_at.is_not(None))
        )
    audit = audit_entries(_url(server))
    return server.count_certificates(), int(transactions or 0), int(spent or 0), audit


def test_scep_requests_are_refused_and_record_nothing_while_the_audit_log_cannot_be_written(
    ec_ca: ScepServer,
) -> None:
    with ec_ca.plain() as http:
        issued = send(
            http, PATH, _request(ec_ca, "dev-fc-old", ec_ca.challenge("devices", "dev-fc-old")),
            _ra(ec_ca),
        ).certificate  # fmt: skip
    assert issued is not None
    enroll = _request(ec_ca, "dev-fc", ec_ca.challenge("devices", "dev-fc"))
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = make_csr(new_key, "dev-fc-old", None).public_bytes(serialization.Encoding.DER)
    renewal = Request(_key(), issued, RENEWAL_REQ, csr, [_ra(ec_ca)])
    gated = _request(ec_ca, "kiosk-fc", ec_ca.challenge("gated", "kiosk-fc"), name="gated")
    before = _recorded(ec_ca)
    with audit_refused(_url(ec_ca)), ec_ca.plain() as http:
        assert_audit_unavailable(_post(http, PATH, enroll))
        assert_audit_unavailable(_post(http, PATH, renewal))
        assert_audit_unavailable(_post(http, "/scep/gated", gated))
        assert _recorded(ec_ca) == before
    with ec_ca.plain() as http:  # the same messages, the fault gone
        assert send(http, PATH, enroll, _ra(ec_ca)).status == SUCCESS
        assert send(http, PATH, renewal, _ra(ec_ca)).status == SUCCESS
        assert send(http, "/scep/gated", gated, _ra(ec_ca, "gated")).status == PENDING


def _url(server: ScepServer) -> str:
    with server.store() as store:
        return store.engine.url.render_as_string(hide_password=False)
