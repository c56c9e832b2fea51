"""The one way our HTTP clients close: ``close()`` and ``with`` (their httpx client, ``_http``)."""

from __future__ import annotations

from types import TracebackType
from typing import Self

import httpx


class ClosingClient:
    """Base of a client that holds one :class:`httpx.Client` in ``_http``."""

    _http: httpx.Client

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
