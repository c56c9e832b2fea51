"""examples/door behind our gateway: the page, the PIN, and no way around the gateway."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gateway.conftest import CA, free_port, gateway_config, run_gateway, wait_for_port

DOOR = Path(__file__).parents[2] / "examples" / "door" / "app.py"


@pytest.fixture
def door(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    opened = tmp_path / "opened"
    process = subprocess.Popen(
        [sys.executable, str(DOOR), "--port", str(port)],
        env={"DOOR_PIN": "4711", "DOOR_COMMAND": f"echo open >> {opened}", "PATH": "/usr/bin:/bin"},
    )
    try:
        wait_for_port(port)
        yield port, opened
    finally:
        process.terminate()
        process.wait(10)


def test_the_door_opens_for_the_phone_with_the_pin_and_for_nobody_else(
    ca: CA, door: tuple[int, Path]
) -> None:
    port, opened = door
    phone = ca.issue("my-phone", ("email:me@home.example",))
    with run_gateway(gateway_config(ca, f"http://127.0.0.1:{port}")) as gateway:
        with ca.client(phone, gateway.port) as client:
            page = client.get("/")
            assert page.status_code == 200
            assert "Hello CN=my-phone" in page.text
            wrong = client.post("/open", data={"pin": "0000"})
            assert wrong.status_code == 403
            assert not opened.exists()
            right = client.post("/open", data={"pin": "4711"})
            assert right.status_code == 200
            assert "door opened" in right.text
        assert opened.read_text() == "open\n"
        with pytest.raises(httpx.TransportError), ca.client(None, gateway.port) as stranger:
            stranger.post("/open", data={"pin": "4711"})
    direct = httpx.post(f"http://127.0.0.1:{port}/open", data={"pin": "4711"}, timeout=5)
    assert direct.status_code == 403, "without the gateway's identity header: refused"
    assert opened.read_text() == "open\n"
