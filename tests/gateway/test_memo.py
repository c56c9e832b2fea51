"""The per-object memo of the handshake path."""

from __future__ import annotations

from ostiary.gateway.memo import ByObject


class Thing:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Thing)  # equal to every other Thing: the memo must not care

    __hash__ = object.__hash__


def test_values_are_found_by_identity_not_equality_and_cleared_when_full() -> None:
    memo: ByObject[Thing, str] = ByObject(size=2)
    first, twin = Thing(), Thing()
    assert memo.put(first, "first") == "first"
    assert memo.get(first) == "first"
    assert memo.get(twin) is None  # equal, but another object
    memo.put(twin, "twin")
    memo.put(Thing(), "third")  # full: what was held is dropped
    assert memo.get(first) is None and memo.get(twin) is None
