"""``scripts/quickstart`` on the ports the user chose (OSTIARY_ADDRESS, OSTIARY_HTTP_ADDRESS).

The script runs as shipped, from a copy of the repository's layout whose ``.venv`` is this
test environment: its ``python`` skips ``pip install`` (already done) and runs everything else
for real, so ``ca init`` and ``ca serve`` are the real commands.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx

from tests.client.conftest import free_port

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "quickstart"


def _repository_copy(root: Path) -> Path:
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(SCRIPT, root / "scripts" / "quickstart")
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then exit 0; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    python.chmod(0o755)
    ostiary = bin_dir / "ostiary"
    ostiary.write_text(
        f'#!/bin/sh\nexec {sys.executable} -c "from ostiary.cli.main import main; main()" "$@"\n'
    )
    ostiary.chmod(0o755)
    return root / "scripts" / "quickstart"


def test_quickstart_listens_where_told_and_certificates_point_there(tmp_path: Path) -> None:
    script = _repository_copy(tmp_path / "repo")
    https_port, http_port = free_port(), free_port()
    home = tmp_path / "demo"
    env = {
        **os.environ,
        "OSTIARY_HOME": str(home),
        "OSTIARY_ADDRESS": f"127.0.0.1:{https_port}",
        "OSTIARY_HTTP_ADDRESS": f"127.0.0.1:{http_port}",
    }
    env.pop("OSTIARY_PASSWORD", None)
    log = tmp_path / "quickstart.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            ["bash", str(script)], env=env, stdout=output, stderr=output, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/health").is_success:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError(f"nothing on the plain-HTTP port: {log.read_text()}")
        config = tomllib.loads((home / "ostiary.toml").read_text())
        assert config["url"] == f"http://127.0.0.1:{http_port}"
        assert config["http_address"] == f"127.0.0.1:{http_port}"
        assert config["address"] == f"127.0.0.1:{https_port}"
        text = log.read_text()
        assert f"https://127.0.0.1:{https_port}" in text
        assert f"Certificates point at http://127.0.0.1:{http_port}" in text
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
