"""Provisioners kept in memory by the server: re-checked every few seconds, never for long."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ostiary.core.errors import NotFound, Unauthorized
from ostiary.provisioners import PROVISIONER_RECHECK_SECONDS, ProvisionerCache, ProvisionerClaims
from ostiary.provisioners.acme import (
    AcmeProvisioner,
    add_acme_provisioner,
    load_acme_provisioner_named,
)
from ostiary.provisioners.jwk import JWKProvisioner
from ostiary.provisioners.manage import load_token_provisioner
from ostiary.provisioners.tokens import ProvisionerNotInMemory, verify_sign_token
from ostiary.store import ProvisionerRepository

from .conftest import Kit, make_csr


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(kit: Kit, clock: Clock) -> ProvisionerCache[JWKProvisioner]:
    return ProvisionerCache(kit.store, load_token_provisioner, monotonic=clock)


def remove_from_store(kit: Kit, name: str) -> None:
    with kit.store.transaction() as session:
        ProvisionerRepository(session).remove(name)


def test_a_removed_provisioner_is_refused_once_the_recheck_is_due(
    kit: Kit, cache: ProvisionerCache[JWKProvisioner], clock: Clock
) -> None:
    loaded = cache.load("ci", what="token")
    remove_from_store(kit, "ci")
    clock.now += PROVISIONER_RECHECK_SECONDS / 2
    assert cache.load("ci", what="token") is loaded  # within the window: from memory
    clock.now += PROVISIONER_RECHECK_SECONDS
    with pytest.raises(Unauthorized, match="unknown provisioner 'ci'"):
        cache.load("ci", what="token")


def test_an_unchanged_provisioner_is_kept_after_the_recheck(
    kit: Kit, cache: ProvisionerCache[JWKProvisioner], clock: Clock
) -> None:
    loaded = cache.load("ci", what="token")
    clock.now += PROVISIONER_RECHECK_SECONDS * 3
    assert cache.load("ci", what="token") is loaded


def test_a_changed_provisioner_is_loaded_again(
    kit: Kit, cache: ProvisionerCache[JWKProvisioner], clock: Clock
) -> None:
    before = cache.load("ci", what="token")
    changed = before.to_config()
    changed["claims"]["allowed_names"] = ["*.elsewhere.example"]
    with kit.store.transaction() as session:
        ProvisionerRepository(session).update(
            "ci", config=changed, now=kit.now + timedelta(minutes=1)
        )
    clock.now += PROVISIONER_RECHECK_SECONDS
    after = cache.load("ci", what="token")
    assert after is not before
    assert after.claims.allowed_names == ("dns:*.elsewhere.example",)


def test_unknown_provisioners_are_not_remembered(
    kit: Kit, cache: ProvisionerCache[JWKProvisioner]
) -> None:
    with pytest.raises(Unauthorized, match="unknown provisioner 'later'"):
        cache.load("later", what="token")
    kit.add_provisioner("later")
    assert cache.load("later", what="token").name == "later"


@pytest.mark.parametrize("issuer", [None, 42, "", "no spaces allowed"], ids=repr)
def test_a_token_without_a_valid_issuer_is_refused(
    cache: ProvisionerCache[JWKProvisioner], issuer: object
) -> None:
    with pytest.raises(Unauthorized, match="names no valid issuer"):
        cache.load(issuer, what="token")


def test_acme_provisioners_are_cached_and_rechecked_alike(kit: Kit, clock: Clock) -> None:
    cache = ProvisionerCache(kit.store, load_acme_provisioner_named, monotonic=clock)
    add_acme_provisioner(kit.store, AcmeProvisioner("acme", ProvisionerClaims()), now=kit.now)
    assert cache.fresh("acme") is None  # never loaded: the caller must load it
    loaded = cache.load("acme", what="the URL")
    assert cache.load("acme", what="the URL") is loaded
    assert cache.fresh("acme") is loaded
    remove_from_store(kit, "acme")
    clock.now += PROVISIONER_RECHECK_SECONDS
    assert cache.fresh("acme") is None  # the recheck is due: no answer from memory
    with pytest.raises(NotFound, match="no ACME provisioner 'acme'"):
        cache.load("acme", what="the URL")
    # A provisioner of another type is not an ACME one, cached or not.
    with pytest.raises(NotFound, match="no ACME provisioner 'ci'"):
        cache.load("ci", what="the URL")


def test_a_caller_on_an_event_loop_is_told_before_the_database_is_read(
    kit: Kit, cache: ProvisionerCache[JWKProvisioner], clock: Clock
) -> None:
    """``verify_sign_token(in_memory_only=True)`` answers from memory or raises
    ProvisionerNotInMemory, never reads: POST /sign re-reads in a worker thread, since a
    database that does not answer would otherwise hold its event loop (every request on it)."""
    csr = make_csr("host.lab.example", ("host.lab.example",))
    token = kit.token()

    def verify(in_memory_only: bool) -> str:
        grant = verify_sign_token(
            kit.store, token, csr, ca=kit.identity, now=kit.now, provisioners=cache,
            in_memory_only=in_memory_only,
        )  # fmt: skip
        return grant.provisioner

    with pytest.raises(ProvisionerNotInMemory):  # never loaded
        verify(True)
    assert verify(False) == "ci"  # loaded (where I/O may wait)
    assert verify(True) == "ci"  # from memory
    clock.now += PROVISIONER_RECHECK_SECONDS
    with pytest.raises(ProvisionerNotInMemory):  # the recheck is due: a read
        verify(True)
