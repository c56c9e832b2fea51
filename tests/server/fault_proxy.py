"""A small TCP proxy that breaks the connections through it on demand (database faults).

Modes (:attr:`FaultProxy.mode`):

- ``pass``: bytes flow both ways (after :attr:`FaultProxy.delay` seconds per chunk, if set);
- ``drop``: every open connection is reset (RST), and so is every new one;
- ``half-open``: nothing flows, and nothing is closed: connections accepted meanwhile are
  held without a peer, bytes sent on open ones are swallowed. A database host that vanished
  without a word looks so. Leaving the mode resets what it held (the host came back without
  the old connections' state).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time

_CHUNK = 65536


def _reset(connection: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0) instead of an orderly FIN."""
    with contextlib.suppress(OSError):
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    _close(connection)


def _close(connection: socket.socket) -> None:
    """Shut down, then close: a close alone leaves the connection open while another thread
    is blocked reading it.
    """
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        connection.close()


class FaultProxy:
    """Listens on a free loopback port and forwards to ``127.0.0.1:upstream``."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.delay = 0.0
        self._mode = "pass"
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._held: set[socket.socket] = set()
        self.faults = 0  # connections reset or held
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.port: int = self._listener.getsockname()[1]
        self._stopped = False
        threading.Thread(target=self._accept, name="fault-proxy", daemon=True).start()

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in {"pass", "drop", "half-open"}:
            raise ValueError(mode)
        with self._lock:
            self._mode = mode
            doomed = set(self._held)
            self._held.clear()
            if mode == "drop":
                doomed |= self._open
                self._open.clear()
            self.faults += len(doomed) if mode == "drop" else 0
        for connection in doomed:
            _reset(connection)

    def close(self) -> None:
        self._stopped = True
        self._listener.close()
        self.mode = "drop"

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                mode = self._mode
                if mode == "half-open":
                    self._held.add(client)
                    self.faults += 1
                    continue
            if mode == "drop":
                self.faults += 1
                _reset(client)
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
            except OSError:
                _reset(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._open |= {client, server}
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while True:
                data = source.recv(_CHUNK)
                if not data:
                    break
                if self._mode == "half-open":
                    with self._lock:
                        self._held |= {source, target}
                    return  # swallowed; the sockets stay open until the mode changes
                if self.delay:
                    time.sleep(self.delay)
                target.sendall(data)
        except OSError:
            pass
        with self._lock:
            if source in self._held:
                return
            self._open -= {source, target}
        for connection in (source, target):
            _close(connection)
