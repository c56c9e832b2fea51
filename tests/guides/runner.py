"""Run a guide's ``sh`` blocks as a new user would: one bash, in order, in an empty folder.

The folder is new and empty (mode 0755, so that a service that drops privileges, such as Mosquitto,
can reach files the guide hands it); ``HOME`` is a fresh folder inside it, so ``~/.ostiary``
and ``~/.config/ostiary`` start empty; the venv's ``ostiary`` and ``python`` come first on
``PATH``. Only what the guide declares (``markdown.py``) is substituted. bash runs with
``set -euo pipefail``: the first failing command fails the guide, and the error names the
block. Every process the guide started (``&``) is in bash's process group, and the whole
group is ended when the guide is done or times out.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.guides.markdown import Guide

VENV_BIN = Path(sys.executable).parent


@dataclass
class GuideRun:
    """What a finished guide left: its folders (``top`` holds the script, the log and
    ``home``; ``folder`` is where it ran), output and exit status."""

    top: Path
    folder: Path
    returncode: int
    output: str
    seconds: float
    ports: dict[int, int]

    def explain(self) -> str:
        return (
            f"guide failed (exit {self.returncode}) after {self.seconds:.1f}s in {self.folder}"
            f" (GUIDES_KEEP=1 keeps it):\n{self.output}"
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def substitute(text: str, guide: Guide, ports: dict[int, int], folder: Path) -> str:
    """The declared replacements (``{guide_dir}`` in one is the guide's folder), then the
    declared ports; nothing else."""
    for old, new in guide.replacements:
        text = text.replace(old, new.replace("{guide_dir}", str(folder)))
    for old_port, new_port in ports.items():
        text = re.sub(rf"(?<![\w.-]){old_port}(?![\w])", str(new_port), text)
    return text


def script_for(guide: Guide, ports: dict[int, int], folder: Path) -> str:
    parts = [
        "set -euo pipefail",
        "guide_block=setup",
        "trap 'echo \"guide: command failed (exit $?) in the block at $guide_block\" >&2' ERR",
    ]
    parts += [substitute(s, guide, ports, folder) for s in guide.setup]
    for block in guide.commands():
        parts.append(f"guide_block={shlex.quote(block.where)}")
        parts.append(f'echo ">>> {block.where} (at ${{SECONDS}}s)"')
        text = substitute(block.text, guide, ports, folder)
        if block.language == "python":
            text = f"python - <<'GUIDE_PYTHON'\n{text}GUIDE_PYTHON"
        parts.append(text)
    parts.append("echo '>>> guide finished'")
    return "\n".join(parts) + "\n"


def run_guide(guide: Guide, *, keep: Path | None = None) -> GuideRun:
    """Run ``guide`` in a new folder (under ``keep`` if given) and end all it started."""
    top = Path(tempfile.mkdtemp(prefix="guide-", dir=keep))
    top.chmod(0o755)
    folder, home = top / "work", top / "home"
    folder.mkdir(mode=0o755)
    home.mkdir()
    for name in guide.files:
        shutil.copy(guide.path.parent / name, folder / name)
    ports = {port: free_port() for port in guide.ports}
    (top / "guide.sh").write_text(script_for(guide, ports, folder))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OSTIARY_", "XDG_", "PYTEST_", "VIRTUAL_ENV", "COV_", "GUIDES_"))
    }
    env |= {
        "HOME": str(home),
        "PATH": f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}",
        "PYTHONUNBUFFERED": "1",
    }
    log = top / "guide.log"
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["bash", str(top / "guide.sh")],
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = process.wait(guide.timeout)
        except subprocess.TimeoutExpired:
            returncode = -1
            out.write(f"\nguide: timed out after {guide.timeout:.0f}s\n".encode())
        finally:
            _end_group(process.pid)
            process.wait(10)
    output = log.read_text(errors="replace")
    return GuideRun(top, folder, returncode, output, time.monotonic() - started, ports)


def _end_group(pgid: int) -> None:
    """SIGTERM to the guide's process group, SIGKILL to what is left after 5 s."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
