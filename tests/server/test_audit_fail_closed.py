"""Audit fail-closed: when an audit entry cannot be written, nothing it would record happens.

The audit append is made to fail in the database itself (a trigger refusing every new
entry, as a full or broken audit device would), then each entry path that changes something
is tried: issuance, renewal, revocation. Each is refused with a problem document, never a
500, and nothing is stored: no certificate, no spent token, no revocation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from sqlalchemy import text

from ostiary.store import CertificateRepository, CertificateStatus
from tests.server.conftest import Running, make_csr

REFUSE = "audit device unavailable"


@contextmanager
def audit_refused(running: Running) -> Iterator[None]:
    engine = running.authority.store.engine
    if engine.dialect.name == "sqlite":
        create = (
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_entries "
            f"BEGIN SELECT RAISE(ABORT, '{REFUSE}'); END"
        )
        drop = "DROP TRIGGER refuse_audit"
    else:
        create = (
            "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$BEGIN RAISE EXCEPTION '{REFUSE}'; END$$; "
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_entries "
            "FOR EACH ROW EXECUTE FUNCTION refuse_audit()"
        )
        drop = "DROP TRIGGER refuse_audit ON audit_entries; DROP FUNCTION refuse_audit()"
    with engine.begin() as connection:
        connection.execute(text(create))
    try:
        yield
    finally:
        with engine.begin() as connection:
            connection.execute(text(drop))


def _refused(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == "urn:ostiary:error:audit-unavailable"
    assert "Retry-After" in answer.headers
    assert REFUSE not in answer.text  # the database's words stay in the log


def test_no_path_changes_anything_while_the_audit_log_cannot_be_written(
    running: Running,
) -> None:
    alice = running.enroll()  # before the fault
    serial = f"{alice.certificate.serial_number:x}"
    before = running.counts()
    audit = running.audit_count()
    with audit_refused(running):
        csr, _ = make_csr("bob@example.com")
        with running.client() as client:
            _refused(
                client.post(
                    "/sign", json={"csr": csr, "token": running.sign_token("bob@example.com")}
                )
            )
        with running.client(identity=alice) as client:
            _refused(client.post("/renew", json={}))
            _refused(client.post("/revoke", json={"serial_number": serial}))
        assert running.counts() == before
        assert running.audit_count() == audit
        with running.authority.store.transaction(read_only=True) as session:
            record = CertificateRepository(session).get(alice.certificate.serial_number)
            assert record.status == CertificateStatus.VALID
    # fault off: the same requests work
    with running.client(identity=alice) as client:
        assert client.post("/renew", json={}).status_code == 201
