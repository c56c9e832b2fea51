"""Provisioners by name: add, get, list, update, remove."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ostiary.core.errors import Conflict, NotFound
from ostiary.store import ProvisionerRepository


def test_provisioners_are_added_listed_updated_and_removed(store, now):
    later = now + timedelta(hours=1)
    with store.transaction() as session:
        provisioners = ProvisionerRepository(session)
        provisioners.add("laptops", type="oidc", config={"issuer": "https://id.example"}, now=now)
        provisioners.add("door", type="token", config={"ttl": 300}, now=now)

    with store.transaction() as session:
        provisioners = ProvisionerRepository(session)
        assert [p.name for p in provisioners.list()] == ["door", "laptops"]
        updated = provisioners.update("door", config={"ttl": 60}, now=later)
        assert (updated.type, updated.config, updated.created_at, updated.updated_at) == (
            "token",
            {"ttl": 60},
            now,
            later,
        )
        provisioners.remove("laptops")

    with store.transaction(read_only=True) as session:
        provisioners = ProvisionerRepository(session)
        assert [p.name for p in provisioners.list()] == ["door"]
        assert provisioners.get("door").config == {"ttl": 60}


def test_provisioner_name_is_unique(store, now):
    with store.transaction() as session:
        ProvisionerRepository(session).add("door", type="token", config={}, now=now)
    with pytest.raises(Conflict, match="already exists"), store.transaction() as session:
        ProvisionerRepository(session).add("door", type="oidc", config={}, now=now)


@pytest.mark.parametrize(
    "operation",
    [
        pytest.param(lambda p: p.get("nope"), id="fail/get"),
        pytest.param(lambda p: p.update("nope", config={}), id="fail/update"),
        pytest.param(lambda p: p.remove("nope"), id="fail/remove"),
    ],
)
def test_unknown_provisioner_is_not_found(store, operation):
    with pytest.raises(NotFound), store.transaction() as session:
        operation(ProvisionerRepository(session))
