"""ARI after ``ca intermediate rotate``: the leaves of the intermediate that no longer issues
get a renewal window that opens now, so clients following RFC 9773 move to the new one
(issue 18: "renewals are pulled forward ... and ARI once ACME exists").
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from ostiary.authority.authority import Authority
from ostiary.authority.rollover import reload_issuers, rotate_intermediate
from ostiary.core.ca import key_id_hex
from ostiary.provisioners.acme_renewal import (
    ISSUER_CHANGE_SPREAD,
    default_window,
    renewal_window,
)
from ostiary.store import Store
from tests.cli.test_health import PASSWORD, issue, make_ageing_ca


def test_leaves_of_a_retired_intermediate_are_asked_to_renew_now(tmp_path: Path) -> None:
    material = make_ageing_ca(tmp_path / "ca", None, "http://127.0.0.1:9")
    store = Store.from_url(material.database_url)
    try:
        authority = Authority(material, store)
        old = issue(authority, "old-leaf", timedelta(days=30))
        old_issuer = key_id_hex(material.intermediate)
        now = datetime.now(UTC)

        def window_of(serial: int, issuer: str) -> tuple[datetime, datetime]:
            found = renewal_window(store, "ops", serial, issuer, now=now)
            return found.start, found.end

        usual = default_window(old.not_valid_before_utc, old.not_valid_after_utc)
        assert window_of(old.serial_number, old_issuer) == (usual.start, usual.end)

        signer = material.load_root_signer(PASSWORD)
        try:
            new = rotate_intermediate(
                material, store, signer, key_type=material.config.key_type,
                password=PASSWORD, now=now, actor="test",
            )  # fmt: skip
        finally:
            signer.close()
        assert window_of(old.serial_number, old_issuer) == (now, now + ISSUER_CHANGE_SPREAD)

        # A leaf of the new intermediate keeps the usual window.
        assert authority.refresh_issuers(lambda: reload_issuers(material, PASSWORD))
        fresh = issue(authority, "new-leaf", timedelta(days=30))
        assert fresh.issuer == new.subject
        usual = default_window(fresh.not_valid_before_utc, fresh.not_valid_after_utc)
        assert window_of(fresh.serial_number, key_id_hex(new)) == (usual.start, usual.end)
    finally:
        store.dispose()
