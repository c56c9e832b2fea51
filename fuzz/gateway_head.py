"""Feeding bytes to the gateway's client side (:class:`ostiary.gateway.http.HTTPDownstream`)
as a TLS connection that passed its checks would, on one event loop kept for the run.

httptools turns an exception raised in a parser callback into ``HttpParserCallbackError``,
which the gateway answers with ``400``: that would hide a bug in our callbacks, so the
downstream here records what its callbacks raise and :func:`feed` raises it again.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from targets import ca

from ostiary.gateway.config import Route
from ostiary.gateway.http import HTTPDownstream
from ostiary.gateway.identity import ClientIdentity
from ostiary.gateway.upstream import UpstreamPool


class _Transport(asyncio.Transport):
    """Collects what the gateway writes to the client."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class _Recording(HTTPDownstream):
    raised: BaseException | None = None

    def on_headers_complete(self) -> None:
        try:
            super().on_headers_complete()
        except BaseException as exc:
            self.raised = exc
            raise


@functools.cache
def _loop() -> asyncio.AbstractEventLoop:
    return asyncio.new_event_loop()


async def _feed(data: bytes) -> bytes:
    pool = UpstreamPool(("127.0.0.1", 9), context=None, timeout=1.0, idle=1.0)
    downstream = _Recording(pool, (Route(prefix="/"),), lambda *_: None, idle=60.0)
    transport = _Transport()
    downstream.connection_made(transport)
    certificate = ca()[1]
    downstream.begin(transport, ClientIdentity(certificate, certificate), "192.0.2.1:4000")
    try:
        downstream.data_received(data)
    finally:
        downstream.connection_lost(None)
    if downstream.raised is not None:
        raise downstream.raised
    return bytes(transport.written)


def feed(data: bytes) -> bytes:
    """What the gateway answers the client (an upstream is never reached)."""
    loop = _loop()
    answer = loop.run_until_complete(_feed(data))
    for task in asyncio.all_tasks(loop):  # a connect to the upstream, cancelled unstarted
        task.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    return answer
