"""Remote signing while the audit log cannot be written (issue 19): an assertion and a bare
signature are refused with the 503 ``audit-unavailable`` problem and Retry-After, and
nothing signed leaves the CA (every signature has its audit entry, or is not handed out);
the assertion's jti is not spent, so the same request works once the fault is gone.
"""

from __future__ import annotations

import hashlib

from tests.server.audit_fault import assert_audit_unavailable, audit_entries, audit_refused
from tests.signing.conftest import SigningRunning
from tests.signing.test_assertions import ask_assertion, b64url, used_tokens


def test_nothing_is_signed_while_the_audit_log_cannot_be_written(
    signing_server: SigningRunning,
) -> None:
    caller = signing_server.caller("billing-fc")
    digest = {"alg": "RS256", "digest": b64url(hashlib.sha256(b"header.payload").digest())}
    engine = signing_server.authority.store.engine
    before = (used_tokens(signing_server), audit_entries(engine))
    with audit_refused(engine):
        refused = ask_assertion(signing_server, caller, jti="audit-fault-jti-0001")
        assert_audit_unavailable(refused)
        assert "assertion" not in refused.json()
        with signing_server.client(caller) as client:
            signed = client.post("/signing/keys/billing/sign", json=digest)
        assert_audit_unavailable(signed)
        assert "signature" not in signed.json()
        assert (used_tokens(signing_server), audit_entries(engine)) == before
    assert ask_assertion(signing_server, caller, jti="audit-fault-jti-0001").status_code == 200
    with signing_server.client(caller) as client:
        signed = client.post("/signing/keys/billing/sign", json=digest)
    assert signed.status_code == 200, signed.text
