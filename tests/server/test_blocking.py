"""ostiary.server.blocking: blocking calls for coroutines, as asyncio.to_thread runs them."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from ostiary.server.blocking import BlockingCalls


def test_a_call_runs_in_another_thread_and_gives_its_result() -> None:
    calls = BlockingCalls(2)

    async def scenario() -> tuple[int, str]:
        return await calls.run(lambda: (threading.get_ident(), threading.current_thread().name))

    try:
        ident, name = asyncio.run(scenario())
    finally:
        calls.close()
    assert ident != threading.get_ident()
    assert name.startswith("ostiary-blocking_")


def test_a_call_after_close_starts_a_thread_again() -> None:
    calls = BlockingCalls(2)
    try:
        assert asyncio.run(calls.run(lambda: 1)) == 1
        calls.close()
        assert asyncio.run(asyncio.wait_for(calls.run(lambda: 2), 5)) == 2
    finally:
        calls.close()


def test_a_calls_exception_is_raised_in_the_caller() -> None:
    calls = BlockingCalls(1)

    def fail() -> None:
        raise LookupError("no such row")

    async def scenario() -> None:
        with pytest.raises(LookupError, match="no such row"):
            await calls.run(fail)
        assert await calls.run(lambda: 7) == 7  # the thread goes on after a failure

    try:
        asyncio.run(scenario())
    finally:
        calls.close()


def test_no_more_threads_than_asked_and_calls_wait_in_line() -> None:
    calls = BlockingCalls(3)
    running = 0
    most = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    async def scenario() -> None:
        await asyncio.gather(*(calls.run(work) for _ in range(12)))

    try:
        asyncio.run(scenario())
    finally:
        calls.close()
    assert most == 3


def test_a_call_whose_caller_was_cancelled_while_it_waited_never_runs() -> None:
    calls = BlockingCalls(1)
    release = threading.Event()
    ran: list[str] = []

    def hold() -> None:
        release.wait(5)
        ran.append("first")

    async def scenario() -> None:
        first = asyncio.ensure_future(calls.run(hold))
        second = asyncio.ensure_future(calls.run(lambda: ran.append("second")))
        await asyncio.sleep(0.05)  # the one thread holds the first; the second waits
        second.cancel()
        await asyncio.sleep(0)
        release.set()
        await first
        assert await calls.run(lambda: "after") == "after"

    try:
        asyncio.run(scenario())
    finally:
        calls.close()
    assert ran == ["first"]


def test_a_running_call_is_not_interrupted_by_its_callers_cancellation() -> None:
    calls = BlockingCalls(1)
    started = threading.Event()
    finished = threading.Event()

    def slow() -> None:
        started.set()
        time.sleep(0.05)
        finished.set()

    async def scenario() -> None:
        task = asyncio.ensure_future(calls.run(slow))
        while not started.is_set():
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await calls.run(lambda: 1) == 1  # queued behind it: it ran to its end

    try:
        asyncio.run(scenario())
    finally:
        calls.close()
    assert finished.is_set()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_starts_its_own_threads() -> None:
    calls = BlockingCalls(1)
    assert asyncio.run(calls.run(lambda: "parent")) == "parent"
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's thread did not survive fork
        try:
            answer = asyncio.run(asyncio.wait_for(calls.run(lambda: "child"), 5))
            os.write(writer, answer.encode())
        finally:
            os._exit(0)
    os.close(writer)
    try:
        assert os.read(reader, 16) == b"child"
    finally:
        os.close(reader)
        os.waitpid(pid, 0)
        calls.close()
