"""A running replica's pulse: its heartbeat row, and the expiry warnings in its log.

:class:`HealthWatch` runs in one thread per ``ca serve`` (the supervising process, with
workers). Every :data:`~ostiary.store.replicas.HEARTBEAT_INTERVAL` it refreshes the replica's
row (one UPDATE: ``ca status`` shows the last activity, ``ca doctor`` compares versions) and
looks at the watched CA certificates (:func:`~ostiary.authority.health.watched_certificates`:
the root, the active intermediate and the retiring ones, read from the folder and the
database at each check, so a rotation made elsewhere is seen) and the root CRL file: a CA
certificate within 90, 30 or 7 days of its end is a warning in the log, an
expired one or a root CRL past its nextUpdate an error, each logged once a day per
threshold, not per request. A clean stop deletes the row.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime
from importlib.metadata import version as package_version

from sqlalchemy.exc import DBAPIError

from ostiary.authority.authority import Authority
from ostiary.authority.health import (
    Finding,
    Level,
    crl_finding,
    expiry_finding,
    read_crl_file,
    watched_certificates,
)
from ostiary.store import ReplicaRepository
from ostiary.store.replicas import HEARTBEAT_INTERVAL

logger = logging.getLogger("ostiary.health")


class HealthWatch:
    """The heartbeat and the daily warnings of one replica (see the module docstring)."""

    def __init__(
        self,
        authority: Authority,
        *,
        interval: float = HEARTBEAT_INTERVAL.total_seconds(),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._authority = authority
        self._interval = interval
        self._clock = clock
        self.instance_id = secrets.token_hex(16)
        self.host = socket.gethostname()
        self.version = package_version("ostiary")
        self._logged: dict[str, date] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        """Refresh this replica's row now."""
        with self._authority.store.transaction() as session:
            ReplicaRepository(session).beat(
                self.instance_id, host=self.host, version=self.version, now=self._clock()
            )

    def check(self) -> list[Finding]:
        """Log what is due today (each finding once a day); the findings logged now."""
        now = self._clock()
        material = self._authority.ca
        findings = [
            (f"{ca.fingerprint}:{f.code}", f)
            for ca in watched_certificates(material.paths, self._authority.store, now=now)
            if (f := expiry_finding(ca, now)) is not None
        ]
        root_crl = crl_finding(read_crl_file("root", material.paths.root_crl), now)
        if root_crl is not None and root_crl.level is Level.ERROR:
            findings.append((root_crl.code, root_crl))
        logged = []
        for key, finding in findings:
            if self._logged.get(key) == now.date():
                continue
            self._logged[key] = now.date()
            level = logging.ERROR if finding.level is Level.ERROR else logging.WARNING
            logger.log(level, "%s", finding.line())
            logged.append(finding)
        return logged

    def start(self) -> None:
        """Beat and check once now, then every interval in a daemon thread."""
        self._tick()
        self._thread = threading.Thread(target=self._run, name="ostiary-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and delete this replica's row (a clean stop)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        try:
            with self._authority.store.transaction() as session:
                ReplicaRepository(session).remove(self.instance_id)
        except DBAPIError:
            logger.warning("could not remove this replica's heartbeat row", exc_info=True)

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            self._tick()

    def _tick(self) -> None:
        try:
            self.beat()
        except DBAPIError:
            logger.warning("the heartbeat could not be written; will retry", exc_info=True)
        try:
            self.check()
        except DBAPIError:  # the intermediates' states are in the database
            logger.warning("the CA certificates could not be checked; will retry", exc_info=True)


__all__ = ["HealthWatch"]
