"""Blocking calls for the event loop, answered through the loop directly.

:func:`asyncio.to_thread` goes through :mod:`concurrent.futures`: a work item and an executor
future with its own lock and condition, the asyncio future chained to it by two callbacks,
and, when the call returns, the result copied from one future to the other under that lock,
three times (cancelled, exception, result). On the ACME path, one such hop per request, that
was ~7 % of the GIL-holding samples per order (py-spy) and 2 % of the instructions
(callgrind), and the threads' lock traffic cost more than either shows: without it, a
median +28 % orders/s at concurrency 8 (docs/BENCHMARKS.md). :class:`BlockingCalls` hands
the call to a thread through a queue and the thread sets the asyncio future's outcome with
one ``call_soon_threadsafe``; nothing else is shared.

What :func:`asyncio.to_thread` promises, this keeps: a call waits in line for a free thread
(as many as the loop's default executor would have: ``min(32, cores + 4)``), a call whose
caller was cancelled before a thread took it never runs, and one that is running is never
interrupted (its outcome is dropped). Context variables are not carried over: nothing on
these paths reads one. A child forked by ``ca serve --workers`` starts its own threads (the
parent's do not survive ``fork``).
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Call = tuple[Callable[[], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class BlockingCalls:
    """A few threads (started as calls come) that run blocking calls for coroutines."""

    def __init__(self, threads: int | None = None, *, name: str = "ostiary-blocking") -> None:
        self._most = threads if threads is not None else min(32, (os.cpu_count() or 1) + 4)
        self._name = name
        self._forget_threads()
        forget = weakref.WeakMethod(self._forget_threads)
        os.register_at_fork(after_in_child=lambda: (method := forget()) and method())

    def _forget_threads(self) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()

    async def run(self, call: Callable[[], T]) -> T:
        """``call()`` in one of the threads; its result, or its exception raised here."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._calls.put((call, loop, future))
        self._start_one_if_needed()
        return await future

    def close(self) -> None:
        """Let the threads end once the calls queued before this have run."""
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._calls.put(None)
        for thread in threads:
            thread.join()

    def _start_one_if_needed(self) -> None:
        with self._lock:
            # Threads waiting for a call take the queued ones; a thread is started only
            # for calls beyond them, up to the most (then the call waits in line).
            if self._calls.qsize() <= self._idle or len(self._threads) >= self._most:
                return
            thread = threading.Thread(
                target=self._work, name=f"{self._name}_{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            item = self._calls.get()
            with self._lock:
                self._idle -= 1
            if item is None:
                return
            call, loop, future = item
            # Read from this thread: a cancelled future stays cancelled, and a call whose
            # caller was cancelled after this check runs to its end, as a thread does.
            if not future.cancelled():
                try:
                    result = call()
                except BaseException as exc:  # handed to the caller, whatever it is
                    _hand(loop, future, None, exc)
                else:
                    _hand(loop, future, result, None)


def _hand(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    result: Any,
    error: BaseException | None,
) -> None:
    try:
        loop.call_soon_threadsafe(_settle, future, result, error)
    except RuntimeError:  # the loop closed meanwhile: nobody waits for this outcome
        pass


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled while the call ran
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


__all__ = ["BlockingCalls"]
