"""Sign-in issuance while the audit log cannot be written (issue 19): ``ostiary cert request
--provisioner <oidc>`` signs in, then the CA refuses the certificate (503
``audit-unavailable``): the command prints one ``error:`` line and exits non-zero, no
certificate is recorded and no file written; signing in again works once the fault is gone.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from ostiary.store import CertificateRecord, Store, sqlite_url_for
from tests.client.conftest import RunningCA
from tests.oidc.conftest import CONFIDENTIAL, Provider
from tests.oidc.test_enroll import _request
from tests.server.audit_fault import REFUSE, audit_entries, audit_refused


def _certificates(ca: RunningCA) -> int:
    store = Store.from_url(sqlite_url_for(ca.home / "ostiary.db"))
    try:
        with store.transaction(read_only=True) as session:
            return int(session.scalar(select(func.count()).select_from(CertificateRecord)) or 0)
    finally:
        store.dispose()


def test_sign_in_issuance_is_refused_while_the_audit_log_cannot_be_written(
    oidc_ca: RunningCA, provider: Provider, tmp_path: Path
) -> None:
    provider.set_user("dora", email="dora@corp.example", email_verified=True)
    url = sqlite_url_for(oidc_ca.home / "ostiary.db")
    before = (_certificates(oidc_ca), audit_entries(url))
    with audit_refused(url):
        request = _request(oidc_ca, tmp_path, "dora@corp.example", CONFIDENTIAL)
        provider.sign_in(request.url, "dora")
        code, err = request.finish()
        assert code != 0
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert errors == [err.strip().splitlines()[-1]], err  # after the sign-in prompt
        assert "audit log cannot be written" in err and REFUSE not in err
        assert (_certificates(oidc_ca), audit_entries(url)) == before
        assert not (tmp_path / "user.crt").exists()
    request = _request(oidc_ca, tmp_path, "dora@corp.example", CONFIDENTIAL)
    provider.sign_in(request.url, "dora")
    code, err = request.finish()
    assert code == 0, err
    assert _certificates(oidc_ca) == before[0] + 1
