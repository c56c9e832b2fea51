"""A per-object memo for the handshake path: the same certificate *objects* come back on
every connection of a known client (the trust caches the verified path per leaf), so what
is derived from one (its issuer's fingerprint, the revocation sources it names) is looked
up by the object's identity instead of being computed again (a SHA-256 over its encoding,
an extension walk).
"""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class ByObject(Generic[K, V]):
    """Values keyed by the identity of an object, which is held (so its id is not reused);
    cleared when ``size`` objects are held (a reload brings new objects).
    """

    def __init__(self, size: int = 1_000) -> None:
        self._size = size
        self._items: dict[int, tuple[K, V]] = {}

    def get(self, key: K) -> V | None:
        item = self._items.get(id(key))
        return item[1] if item is not None and item[0] is key else None

    def put(self, key: K, value: V) -> V:
        if len(self._items) >= self._size:
            self._items.clear()
        self._items[id(key)] = (key, value)
        return value
