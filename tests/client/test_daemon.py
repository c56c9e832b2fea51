"""``ostiary cert renew --daemon`` as a process: on time, --exec, SIGHUP, SIGTERM, CA outage."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from ostiary.client.renewal import parse_renewal_policy
from ostiary.core.encoding import load_certificate_chain
from tests.client.conftest import Daemon, RunningCA, ok

Enroll = Callable[..., tuple[Path, Path]]
StartDaemon = Callable[..., Daemon]
_RENEWED = re.compile(r"^(\S+) \S+: renewed: serial", re.MULTILINE)


def _serial(crt: Path) -> int:
    return load_certificate_chain(crt.read_bytes())[0].serial_number


def _renewal_times(log: str) -> list[datetime]:
    return [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in _RENEWED.findall(log)]


def test_daemon_renews_when_due_and_runs_exec(
    enroll: Enroll, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    crt, key = enroll("ticking", not_after="30s")
    original = load_certificate_chain(crt.read_bytes())[0]
    due = parse_renewal_policy("20s").certificate_due_at(original)  # in 5.5 to 10 seconds
    hooks = tmp_path / "hooks.log"
    daemon = start_daemon(
        crt, key, "--expires-in", "20s", "--exec", f"echo $OSTIARY_SERIAL >> {hooks}"
    )

    log = daemon.wait_for("renewed: serial", timeout=20)

    renewed_at = _renewal_times(log)[0]
    assert renewed_at >= due.replace(microsecond=0)
    assert (renewed_at - due).total_seconds() < 5
    assert f"next renewal at {due:%Y-%m-%dT%H:%M:%SZ}" in log
    first_serial = re.search(r"renewed: serial ([0-9a-f]+)", log)
    assert first_serial is not None
    assert hooks.read_text().split()[0] == first_serial.group(1)
    assert _serial(crt) != original.serial_number
    assert daemon.stop() == 0
    assert daemon.log().rstrip().endswith("stopping")


def test_daemon_renews_at_once_on_sighup_and_stops_on_sigterm(
    enroll: Enroll, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    crt, key = enroll("patient", not_after="2h")
    before = _serial(crt)
    p12 = tmp_path / "patient.p12"
    daemon = start_daemon(crt, key, "--p12", p12, "--expires-in", "5s")
    daemon.wait_for("next renewal at")
    assert p12.exists()  # a missing .p12 is written at start
    assert _serial(crt) == before

    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_for("renewed: serial")

    assert _serial(crt) != before
    assert "renewal requested (SIGHUP)" in daemon.log()
    assert daemon.wait_for("next renewal at", count=2)
    assert daemon.stop() == 0
    assert daemon.log().rstrip().endswith("stopping")


@pytest.mark.slow
def test_daemon_backs_off_while_the_ca_is_down_and_renews_when_it_is_back(
    own_ca: RunningCA, client_config: Path, tmp_path: Path, start_daemon: StartDaemon
) -> None:
    ok("bootstrap", "--ca-url", own_ca.url, "--fingerprint", own_ca.fingerprint)
    crt, key = tmp_path / "d.crt", tmp_path / "d.key"
    ok(
        "cert",
        "request",
        "d",
        crt,
        key,
        "--token",
        own_ca.token("d", not_after="2h"),
        "--not-after",
        "2h",
    )
    before = _serial(crt)
    own_ca.stop()

    daemon = start_daemon(crt, key, "--force", "--retry-max", "1s")
    daemon.wait_for("cannot reach the CA", count=3)
    own_ca.start()  # the same ports
    log = daemon.wait_for("renewed: serial", timeout=20)

    assert _serial(crt) != before
    delays = [float(d) for d in re.findall(r"next attempt in ([\d.]+)s", log)]
    assert all(0.25 <= d <= 1.0 for d in delays), delays
    assert daemon.stop() == 0


def test_daemon_refuses_to_start_with_a_key_that_does_not_match(
    enroll: Enroll, start_daemon: StartDaemon
) -> None:
    crt, _ = enroll("left", not_after="2h")
    _, other_key = enroll("right", not_after="2h")
    daemon = start_daemon(crt, other_key)
    assert daemon.process.wait(timeout=20) == 1
    assert "error:" in daemon.log()
