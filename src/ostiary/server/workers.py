"""Worker processes: one CA server per core, all on the same ports.

One Python process uses one core (the GIL). ``ca serve --workers N`` prepares everything once
in the parent (keys unlocked, sockets bound, the TLS certificate issued, the first CRL
built), then forks N workers that each run that same server. Each worker keeps its own
listening sockets of a ``SO_REUSEPORT`` group (:func:`ostiary.server.runner.bind_each`) and
closes the others', so the kernel spreads new connections over the workers; the parent
closes them all. Forking rather than starting fresh
interpreters keeps the unlocked keys in memory: no password is asked again, no key file is
read again.

- Each worker opens its own database connections: the pool inherited from the parent is
  dropped, unclosed, right after the fork (SQLAlchemy's recipe for ``fork``).
- Issuance stays correct across workers as across replicas: the database refuses a token
  spent twice, and audit appends queue on the write lock (SQLite) or the advisory lock
  (PostgreSQL); each worker batches its own commits.
- The parent only supervises. SIGTERM and SIGINT are passed on to the workers, which finish
  the requests in flight. If a worker dies otherwise, the parent stops the others and exits
  non-zero, so that the service manager restarts the CA as a whole.
- A key on a PKCS#11 token is refused: a token session does not survive ``fork``.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from types import FrameType

from sqlalchemy import Engine

#: Most worker processes ``ca serve --workers`` starts.
MAX_WORKERS = 64

logger = logging.getLogger("ostiary.server")


def run_workers(
    count: int,
    serve: Callable[[int], None],
    *,
    engine: Engine,
    listeners: Sequence[Sequence[socket.socket]] = (),
    on_started: Callable[[], None] | None = None,
) -> int:
    """Fork ``count`` processes running ``serve(index)``; wait for all; the exit status.

    ``listeners[index]`` are the sockets worker ``index`` serves: it closes every other
    worker's, and the parent, once all are forked, closes them all, so that each socket is
    open in one process only. 0 when the workers stopped on SIGTERM/SIGINT (sent to the
    parent or to them), 1 when one of them ended on its own (crashed, or was killed) and the
    others were stopped. ``on_started`` runs in the parent once every worker is forked (to
    start the parent's own threads: a thread must not be running across a fork).
    """
    if not 1 <= count <= MAX_WORKERS:
        raise ValueError(f"worker count must be 1 to {MAX_WORKERS}")
    if listeners and len(listeners) != count:
        raise ValueError("one set of listening sockets per worker")
    workers: set[int] = set()
    stopping = False

    def stop_all(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in workers:
            _signal(pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop_all) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for index in range(count):
            pid = os.fork()
            if pid == 0:  # the worker
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
                _close(listeners, keep=index)
                os._exit(_worker(functools.partial(serve, index), engine))
            workers.add(pid)
        _close(listeners, keep=None)
        logger.info("serving with %d worker processes: %s", count, sorted(workers))
        if on_started is not None:
            on_started()
        status = 0
        while workers:
            try:
                pid, _wait_status = os.wait()
            except ChildProcessError:
                break
            workers.discard(pid)
            if not stopping:
                logger.error("worker %d ended on its own: stopping the others", pid)
                status = 1
                stop_all(signal.SIGTERM, None)
        return status
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _worker(serve: Callable[[], None], engine: Engine) -> int:
    engine.dispose(close=False)  # the parent's connections are the parent's
    try:
        serve()
    except BaseException:
        logger.exception("worker %d failed", os.getpid())
        return 1
    finally:
        sys.stdout.flush()  # os._exit() skips the interpreter's own clean-up
        sys.stderr.flush()
    return 0


def _close(listeners: Sequence[Sequence[socket.socket]], *, keep: int | None) -> None:
    """Close every worker's listening sockets but those of worker ``keep``."""
    for index, sockets in enumerate(listeners):
        if index != keep:
            for listener in sockets:
                listener.close()


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


__all__ = ["MAX_WORKERS", "run_workers"]
