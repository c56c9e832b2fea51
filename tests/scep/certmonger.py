"""certmonger (Debian) as a SCEP client, run without D-Bus on a private socket.

``certmonger -n -L -P SOCK -c SCRIPT`` runs SCRIPT with ``CERTMONGER_PVT_ADDRESS`` exported
(so ``getcert`` talks to this daemon) and exits when it ends; its state lives in the
directories named by ``CERTMONGER_*_DIR``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import require_tool


def start_certmonger(folder: Path, script: str) -> subprocess.Popen[str]:
    """Start the daemon running ``script`` (sh); stdout and stderr together, as text."""
    for part in ("requests", "cas", "tmp"):
        (folder / part).mkdir(parents=True, exist_ok=True)
    environment = {
        **os.environ,
        "CERTMONGER_REQUESTS_DIR": str(folder / "requests"),
        "CERTMONGER_CAS_DIR": str(folder / "cas"),
        "CERTMONGER_TMPDIR": str(folder / "tmp"),
    }
    command = [
        require_tool("certmonger"), "-n", "-L", "-P", str(folder / "sock"), "-d", "2",
        "-c", f"sh -ec '{script}'",
    ]  # fmt: skip
    return subprocess.Popen(
        command, cwd=folder, env=environment, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def add_ca_script(url: str) -> str:
    """Register the SCEP CA ``T`` and wait until certmonger has fetched its certificates."""
    return (
        f"getcert add-scep-ca -c T -u {url}; "
        'for i in $(seq 100); do getcert list-cas -c T | grep -q "BEGIN CERTIFICATE" && break; '
        "sleep 0.2; done; "
    )
