"""The hash-chained audit log: it verifies when untouched and shows every kind of tampering."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import delete, insert, select, update

from ostiary.store import (
    GENESIS_HASH,
    AuditEntry,
    AuditFault,
    AuditHead,
    AuditLog,
    AuditVerification,
    entry_hash,
)
from ostiary.store.audit import canonical_json


def _append_five(store, now):
    with store.transaction() as session:
        log = AuditLog(session)
        for n in range(1, 6):
            log.append(
                "certificate.issued",
                at=now + timedelta(seconds=n),
                actor="provisioner:otp",
                target=f"serial:{n:x}",
                details={"n": n, "names": [f"dns:d{n}.example"], "note": "ünïcode"},
            )


def _verify(store) -> AuditVerification:
    with store.transaction(read_only=True) as session:
        return AuditLog(session).verify()


def _row(session, entry_id):
    return session.scalars(select(AuditEntry).where(AuditEntry.id == entry_id)).one()


def _forge(session, entry_id, prev_hash, now):
    """Insert an entry the way an attacker who knows the hash scheme would."""
    fields = {"at": now, "event": "certificate.issued", "actor": "mallory", "target": None}
    fields["details"] = {"forged": True}
    digest = entry_hash(prev_hash=prev_hash, **fields)
    session.execute(
        insert(AuditEntry).values(id=entry_id, prev_hash=prev_hash, hash=digest, **fields)
    )


def _edit(session, now, **values):
    session.execute(update(AuditEntry).where(AuditEntry.id == 3).values(**values))


def _edit_and_rehash(session, now):
    row = _row(session, 3)
    digest = entry_hash(
        at=row.at,
        event="certificate.revoked",
        actor=row.actor,
        target=row.target,
        details=row.details,
        prev_hash=row.prev_hash,
    )
    session.execute(
        update(AuditEntry)
        .where(AuditEntry.id == 3)
        .values(event="certificate.revoked", hash=digest)
    )


def _insert_middle(session, now):
    # Ids are not hashed, so renumbering alone breaks nothing; the forged entry does.
    session.execute(update(AuditEntry).where(AuditEntry.id >= 3).values(id=AuditEntry.id + 100))
    _forge(session, 50, _row(session, 2).hash, now)


TAMPERING = [
    pytest.param(lambda s, now: None, AuditVerification(True, 5), id="ok/untouched"),
    pytest.param(
        lambda s, now: _edit(s, now, event="certificate.denied"),
        AuditVerification(False, 2, 3, AuditFault.EDITED),
        id="fail/edited-event",
    ),
    pytest.param(
        lambda s, now: _edit(s, now, details={"n": 3, "names": ["dns:evil.example"]}),
        AuditVerification(False, 2, 3, AuditFault.EDITED),
        id="fail/edited-details",
    ),
    pytest.param(
        lambda s, now: _edit(s, now, at=now + timedelta(seconds=3, microseconds=1)),
        AuditVerification(False, 2, 3, AuditFault.EDITED),
        id="fail/edited-time",
    ),
    pytest.param(
        lambda s, now: _edit(s, now, actor=None),
        AuditVerification(False, 2, 3, AuditFault.EDITED),
        id="fail/edited-actor",
    ),
    pytest.param(
        _edit_and_rehash,
        AuditVerification(False, 3, 4, AuditFault.CHAIN_BROKEN),
        id="fail/edited-and-rehashed",
    ),
    pytest.param(
        lambda s, now: s.execute(delete(AuditEntry).where(AuditEntry.id == 3)),
        AuditVerification(False, 2, 4, AuditFault.CHAIN_BROKEN),
        id="fail/deleted-middle",
    ),
    pytest.param(
        lambda s, now: s.execute(delete(AuditEntry).where(AuditEntry.id == 1)),
        AuditVerification(False, 0, 2, AuditFault.CHAIN_BROKEN),
        id="fail/deleted-first",
    ),
    pytest.param(
        lambda s, now: s.execute(delete(AuditEntry).where(AuditEntry.id == 5)),
        AuditVerification(False, 4, None, AuditFault.HEAD_MISMATCH),
        id="fail/deleted-last",
    ),
    pytest.param(
        lambda s, now: s.execute(delete(AuditEntry)),
        AuditVerification(False, 0, None, AuditFault.HEAD_MISMATCH),
        id="fail/deleted-all",
    ),
    pytest.param(
        lambda s, now: _forge(s, 0, GENESIS_HASH, now),
        AuditVerification(False, 1, 1, AuditFault.CHAIN_BROKEN),
        id="fail/inserted-before-first",
    ),
    pytest.param(
        _insert_middle,
        AuditVerification(False, 3, 103, AuditFault.CHAIN_BROKEN),
        id="fail/inserted-middle",
    ),
    pytest.param(
        lambda s, now: _forge(s, 6, _row(s, 5).hash, now),
        AuditVerification(False, 6, None, AuditFault.HEAD_MISMATCH),
        id="fail/inserted-after-last",
    ),
    pytest.param(
        lambda s, now: s.execute(update(AuditHead).values(hash="f" * 64)),
        AuditVerification(False, 5, None, AuditFault.HEAD_MISMATCH),
        id="fail/head-edited",
    ),
    pytest.param(
        lambda s, now: s.execute(delete(AuditHead)),
        AuditVerification(False, 5, None, AuditFault.HEAD_MISMATCH),
        id="fail/head-deleted",
    ),
]


@pytest.mark.parametrize(("tamper", "expected"), TAMPERING)
def test_verification_finds_tampering(store, now, tamper, expected):
    _append_five(store, now)
    with store.transaction() as session:
        tamper(session, now)
    assert _verify(store) == expected


def test_empty_log_verifies(store):
    assert _verify(store) == AuditVerification(True, 0)


def test_entries_link_to_the_one_before_and_the_head_to_the_last(store, now):
    _append_five(store, now)
    with store.transaction(read_only=True) as session:
        entries = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
        head = session.get(AuditHead, 1)
    assert entries[0].prev_hash == GENESIS_HASH
    assert [e.prev_hash for e in entries[1:]] == [e.hash for e in entries[:-1]]
    assert (head.last_entry_id, head.hash) == (entries[-1].id, entries[-1].hash)
    assert entries[0].at == now + timedelta(seconds=1)
    assert entries[0].details == {"n": 1, "names": ["dns:d1.example"], "note": "ünïcode"}


def test_an_append_rolled_back_with_its_transaction_leaves_the_chain_intact(store, now):
    def issue_then_fail() -> None:
        with store.transaction() as session:
            AuditLog(session).append("certificate.issued", at=now)
            raise RuntimeError("signer unavailable")

    _append_five(store, now)
    with pytest.raises(RuntimeError):
        issue_then_fail()
    with store.transaction() as session:
        AuditLog(session).append("certificate.denied", at=now)
    assert _verify(store) == AuditVerification(True, 6)


@pytest.mark.parametrize(
    ("event", "details", "at_offset"),
    [
        pytest.param("certificate.issued", {"password": "x"}, timedelta(0), id="fail/secret-key"),
        pytest.param(
            "certificate.issued", {"req": {"Client_Secret": "x"}}, timedelta(0), id="fail/nested"
        ),
        pytest.param("certificate.issued", {"ratio": 0.5}, timedelta(0), id="fail/float"),
        pytest.param("certificate.issued", {"serial": 2**64}, timedelta(0), id="fail/big-int"),
        pytest.param("Certificate Issued", {}, timedelta(0), id="fail/event-name"),
        pytest.param("certificate.issued", {}, None, id="fail/naive-time"),
    ],
)
def test_append_refuses_what_would_not_round_trip_or_is_secret(
    store, now, event, details, at_offset
):
    at = now + at_offset if at_offset is not None else now.replace(tzinfo=None)
    with pytest.raises((ValueError, TypeError)), store.transaction() as session:
        AuditLog(session).append(event, at=at, details=details)


def test_canonical_form_is_rfc8785_json():
    value = {"b": [True, None, -1], "a": "\u20ac\n", "\uff21": 1, "\U0001f600": 2, "é": {}}
    # Keys sort by UTF-16 code units: the emoji (D83D DE00) comes before U+FF21.
    assert canonical_json(value) == '{"a":"€\\n","b":[true,null,-1],"é":{},"😀":2,"Ａ":1}'


def test_entry_hash_is_stable(now):
    digest = entry_hash(
        at=now,
        event="certificate.issued",
        actor="provisioner:otp",
        target="serial:1",
        details={"names": ["dns:a.example"]},
        prev_hash=GENESIS_HASH,
    )
    # Changing this value breaks every existing audit log: bump HASH_VERSION instead.
    assert digest == "b35422b88c583230a668bbba0f7f5be366c682c9f20e2cbe32aab6250a4c7ded"


def test_chain_stays_linear_under_concurrent_appends_from_two_replicas(store, replica, now):
    per_thread = 25
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def append(index: int) -> None:
        replica_store = [store, replica][index % 2]
        barrier.wait()
        try:
            for n in range(per_thread):
                with replica_store.transaction() as session:
                    AuditLog(session).append(
                        "certificate.issued", at=now, actor=f"thread-{index}", details={"n": n}
                    )
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=append, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _verify(store) == AuditVerification(True, 8 * per_thread)


def test_verification_during_concurrent_appends_reports_no_fault(store, replica, now):
    done = threading.Event()
    results: list[AuditVerification] = []

    def keep_verifying() -> None:
        while not done.is_set():
            results.append(_verify(replica))

    verifier = threading.Thread(target=keep_verifying)
    verifier.start()
    try:
        for n in range(60):
            with store.transaction() as session:
                AuditLog(session).append("token.used", at=now, details={"n": n})
    finally:
        done.set()
        verifier.join()
    assert results
    assert all(result.ok for result in results), [r for r in results if not r.ok]


@pytest.mark.slow
def test_verifying_twenty_thousand_entries_is_fast(store, now):
    rows = []
    prev_hash = GENESIS_HASH
    for n in range(20_000):
        fields = {
            "at": now + timedelta(seconds=n),
            "event": "certificate.issued",
            "actor": "provisioner:otp",
            "target": f"serial:{n:x}",
            "details": {"names": [f"dns:device-{n}.example"], "profile": "device"},
        }
        digest = entry_hash(prev_hash=prev_hash, **fields)
        rows.append({"id": n + 1, "prev_hash": prev_hash, "hash": digest, **fields})
        prev_hash = digest
    with store.transaction() as session:
        session.execute(insert(AuditEntry), rows)
        session.execute(update(AuditHead).values(last_entry_id=len(rows), hash=prev_hash))

    # CPU time of this process (the chain is hashed here), not wall time: a guard against a
    # quadratic walk that a busy machine cannot trip. Speed itself is measured in bench/.
    started = time.process_time()
    result = _verify(store)
    elapsed = time.process_time() - started
    assert result == AuditVerification(True, 20_000)
    assert elapsed < 10, f"verification took {elapsed:.1f} s of CPU"
