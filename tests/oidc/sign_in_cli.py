"""``ostiary cert request --provisioner NAME --no-browser`` in a subprocess, up to the
sign-in URL it prints; the test then plays the browser.

Every process started here is killed by the ``cert_requests_cleaned`` fixture
(tests/oidc/conftest.py) if a test ends without finishing it: a failed step must not leave
a running CLI and its pipes to be collected in some later test.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from ..client.conftest import OSTIARY, RunningCA

#: How long the CLI may take to print its URL, and to finish once the browser is done.
WAIT = 60

_started: list[subprocess.Popen[str]] = []


@dataclass
class Request:
    """``ostiary cert request`` running in a subprocess, its sign-in URL once printed."""

    process: subprocess.Popen[str]
    url: str

    @property
    def redirect_uri(self) -> str:
        return parse_qs(urlsplit(self.url).query)["redirect_uri"][0]

    def finish(self) -> tuple[int, str]:
        try:
            _, err = self.process.communicate(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            raise
        return self.process.returncode, err


def start_cert_request(ca: RunningCA, arguments: Sequence[str]) -> Request:
    """``ostiary cert request ARGUMENTS --no-browser --ca-url --root``, once its URL is out."""
    args = [*OSTIARY, "cert", "request", *arguments, "--no-browser",
            "--ca-url", ca.url, "--root", str(ca.root_file)]  # fmt: skip
    process = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _started.append(process)
    assert process.stdout is not None
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("http"):
            return Request(process, line.strip())
        if not line and process.poll() is not None:
            break
    process.kill()
    _, err = process.communicate()
    raise AssertionError(f"no sign-in URL printed: {err}")


def kill_unfinished() -> None:
    """Kill and reap every CLI a test left running, closing its pipes."""
    while _started:
        process = _started.pop()
        if process.poll() is None:
            process.kill()
        process.communicate()


__all__ = ["WAIT", "Request", "kill_unfinished", "start_cert_request"]
