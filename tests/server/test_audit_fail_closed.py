"""Audit fail-closed: when an audit entry cannot be written, nothing it would record happens.

The audit append is made to fail in the database itself (a trigger refusing every new
entry, as a full or broken audit device would), then each entry path that changes something
is tried: issuance, renewal, revocation. Each is refused with a problem document, never a
500, and nothing is stored: no certificate, no spent token, no revocation.
"""

from __future__ import annotations

from ostiary.store import CertificateRepository, CertificateStatus
from tests.server.audit_fault import assert_audit_unavailable as _refused
from tests.server.audit_fault import audit_refused
from tests.server.conftest import Running, make_csr


def test_no_path_changes_anything_while_the_audit_log_cannot_be_written(
    running: Running,
) -> None:
    alice = running.enroll()  # before the fault
    serial = f"{alice.certificate.serial_number:x}"
    before = running.counts()
    audit = running.audit_count()
    with audit_refused(running.authority.store.engine):
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
