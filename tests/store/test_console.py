"""Console sign-in flows, sessions and the CSRF key live in the database, so that every
server process and replica sees the same ones (a callback or a form may land on any).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from ostiary.server.console.sessions import Flow, Session, SessionStore
from ostiary.store import ConsoleEntry, ConsoleRepository, Store

from .conftest import NOW

CALLBACK = "https://ca.example/console/oidc/callback"


def flow(expires_in: timedelta = timedelta(minutes=10)) -> Flow:
    return Flow("corp", "state", "nonce", "v" * 43, CALLBACK, NOW + expires_in)


def test_a_flow_is_taken_once_by_any_replica(store: Store, replica: Store) -> None:
    here, there = SessionStore(store), SessionStore(replica)
    flow_id = here.add_flow(flow(), now=NOW)
    taken = there.take_flow(flow_id, now=NOW)
    assert taken == flow()  # every field comes back, the expiry included
    assert here.take_flow(flow_id, now=NOW) is None
    assert there.take_flow(flow_id, now=NOW) is None


def test_expired_or_malformed_ids_open_nothing(store: Store) -> None:
    sessions = SessionStore(store)
    stale = sessions.add_flow(flow(timedelta(minutes=1)), now=NOW)
    assert sessions.take_flow(stale, now=NOW + timedelta(minutes=2)) is None
    session_id = sessions.add_session(
        Session("a@x.example", "corp", NOW + timedelta(hours=8)), now=NOW
    )
    assert sessions.session(session_id, now=NOW + timedelta(hours=7)) is not None
    assert sessions.session(session_id, now=NOW + timedelta(hours=8)) is None
    assert sessions.session("not an id", now=NOW) is None
    assert sessions.take_flow("x" * 43 + "'", now=NOW) is None


def test_a_session_opened_on_one_replica_is_seen_and_ended_on_the_other(
    store: Store, replica: Store
) -> None:
    here, there = SessionStore(store), SessionStore(replica)
    session = Session("a@x.example", "corp", NOW + timedelta(hours=8))
    session_id = here.add_session(session, now=NOW)
    assert there.session(session_id, now=NOW) == session
    assert there.end_session(session_id)
    assert not here.end_session(session_id)
    assert here.session(session_id, now=NOW) is None


def test_ids_of_one_kind_never_open_the_other(store: Store) -> None:
    sessions = SessionStore(store)
    flow_id = sessions.add_flow(flow(), now=NOW)
    assert sessions.session(flow_id, now=NOW) is None
    session_id = sessions.add_session(
        Session("a@x.example", "corp", NOW + timedelta(hours=1)), now=NOW
    )
    assert sessions.take_flow(session_id, now=NOW) is None
    assert sessions.take_flow(flow_id, now=NOW) is not None


def test_only_digests_are_stored_and_expired_entries_are_purged(store: Store) -> None:
    sessions = SessionStore(store)
    old = sessions.add_flow(flow(timedelta(minutes=1)), now=NOW)
    kept = sessions.add_flow(replace(flow(), state="other"), now=NOW + timedelta(minutes=5))
    with store.transaction(read_only=True) as session:
        digests = [row.digest for row in session.query(ConsoleEntry)]
    assert len(digests) == 1  # the expired one went when the second was added
    assert old not in digests and kept not in digests
    assert all(len(d) == 64 for d in digests)


def test_the_csrf_key_is_made_once_and_shared(store: Store, replica: Store) -> None:
    with store.transaction() as session:
        first = ConsoleRepository(session).secret("console.csrf", size=32, now=NOW)
    with replica.transaction() as session:
        second = ConsoleRepository(session).secret("console.csrf", size=32, now=NOW)
    with replica.transaction() as session:
        other = ConsoleRepository(session).secret("something.else", size=32, now=NOW)
    assert first == second and len(first) == 32
    assert other != first
