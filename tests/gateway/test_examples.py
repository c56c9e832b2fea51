"""examples/door behind our gateway: the page, the PIN, and no way around the gateway."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.gateway.conftest import CA, free_port, gateway_config, run_gateway, wait_for_port

DOOR = Path(__file__).parents[2] / "examples" / "door" / "app.py"


@contextmanager
def door_app(command: str) -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(DOOR), "--port", str(port)],
        env={"DOOR_PIN": "4711", "DOOR_COMMAND": command, "PATH": "/usr/bin:/bin"},
    )
    try:
        wait_for_port(port)
        yield port
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def door(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    opened = tmp_path / "opened"
    with door_app(f"echo open >> {opened}") as port:
        yield port, opened


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


def test_a_failed_door_command_is_reported_not_called_opened(ca: CA, tmp_path: Path) -> None:
    """DOOR_COMMAND exiting non-zero (the relay unreachable): the phone is told so."""
    tried = tmp_path / "tried"
    phone = ca.issue("my-phone", ("email:me@home.example",))
    with door_app(f"echo tried >> {tried}; exit 7") as port:
        with run_gateway(gateway_config(ca, f"http://127.0.0.1:{port}")) as gateway:
            with ca.client(phone, gateway.port) as client:
                answer = client.post("/open", data={"pin": "4711"})
    assert tried.read_text() == "tried\n", "the command did run"
    assert answer.status_code == 502
    assert "door opened" not in answer.text
    assert "the door did not open: DOOR_COMMAND exited 7" in answer.text
