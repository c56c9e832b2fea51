"""Byte pipes between two asyncio transports: the TCP tunnel, and an HTTP connection after a
protocol switch (WebSocket).

Each side is an :class:`End`: what it receives is written to its partner's transport. Flow
control follows the transports: when one side's write buffer is full
(:meth:`asyncio.Protocol.pause_writing`), its partner stops reading until the buffer drains.
When either side closes, the other is closed once its buffered bytes are written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class End(asyncio.Protocol):
    """One side of a connection pair; ``piping`` makes it a plain byte pipe."""

    def __init__(self, idle: float) -> None:
        self.transport: asyncio.Transport | None = None
        self.partner: End | None = None
        self.piping = False
        self.writing_paused = False
        self.idle = idle
        self.seen = 0.0  # loop time of the last bytes received
        self.waiting: list[bytes] = []  # received before the partner was there
        self._reading_paused: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None
        #: Told +1 when the connection is made and -1 when it is lost (the gateway's count
        #: of open client connections); None: not counted.
        self.counted: Callable[[int], None] | None = None

    # ------------------------------------------------------------------ transport events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.counted is not None:
            self.counted(1)

    def data_received(self, data: bytes) -> None:
        self.seen = _now()
        partner = self.partner
        if partner is not None and partner.transport is not None:
            partner.transport.write(data)
        else:
            self.waiting.append(data)

    def eof_received(self) -> bool:
        return False  # close; connection_lost closes the partner

    def connection_lost(self, exc: Exception | None) -> None:
        if self.counted is not None:
            self.counted(-1)
        if self._timer is not None:
            self._timer.cancel()
        if self.piping and self.partner is not None and self.partner.transport is not None:
            self.partner.transport.close()

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.partner is not None:
            self.partner.pause_reading("flow")

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.partner is not None:
            self.partner.resume_reading("flow")

    # ------------------------------------------------------------------ helpers
    def pause_reading(self, reason: str) -> None:
        if not self._reading_paused and self.transport is not None:
            self.transport.pause_reading()
        self._reading_paused.add(reason)

    def resume_reading(self, reason: str) -> None:
        if reason in self._reading_paused:
            self._reading_paused.discard(reason)
            if not self._reading_paused and self.transport is not None:
                if not self.transport.is_closing():
                    self.transport.resume_reading()

    def watch_idle(self) -> None:
        """Close this side (and so the pair) when neither side received bytes for ``idle``."""
        self.seen = _now()
        self._timer = asyncio.get_running_loop().call_later(self.idle, self._check_idle)

    def _check_idle(self) -> None:
        last = self.seen
        if self.partner is not None:
            last = max(last, self.partner.seen)
        left = last + self.idle - _now()
        if left > 0:
            self._timer = asyncio.get_running_loop().call_later(left, self._check_idle)
        elif self.transport is not None:
            self.transport.close()


def link(a: End, b: End, *, held_a: bytes = b"", held_b: bytes = b"") -> None:
    """Make ``a`` and ``b`` one pipe; what either received before (``held_a`` read from
    ``a``, ``held_b`` from ``b``, and their ``waiting`` bytes) goes to the other first.
    """
    a.partner, b.partner = b, a
    a.piping = b.piping = True
    to_b = b"".join(a.waiting) + held_a
    to_a = b"".join(b.waiting) + held_b
    a.waiting, b.waiting = [], []
    if to_b and b.transport is not None:
        b.transport.write(to_b)
    if to_a and a.transport is not None:
        a.transport.write(to_a)


def _now() -> float:
    return asyncio.get_running_loop().time()
