"""The server's log lines show a client's path with its control characters made visible."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import OperationalError

from ostiary.server.problems import install_problem_handlers


def _app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/bug/{rest:path}")
    def bug(rest: str) -> None:
        raise RuntimeError("a bug")

    @app.get("/down/{rest:path}")
    def down(rest: str) -> None:
        raise OperationalError("SELECT 1", {}, Exception("db host unreachable"))

    return app


@pytest.mark.parametrize(
    "prefix", [pytest.param("bug", id="unexpected"), pytest.param("down", id="store")]
)
def test_a_path_with_control_characters_cannot_forge_log_lines(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://ca") as client:
            return await client.get(f"/{prefix}/x%1b%5B2Jforged%C2%9B31m")

    with caplog.at_level(logging.WARNING, logger="ostiary"):
        answer = asyncio.run(run())
    assert answer.status_code in (500, 503)
    lines = [r.getMessage() for r in caplog.records if f"/{prefix}/" in r.getMessage()]
    assert lines, caplog.text
    for line in lines:
        assert not any(c in line for c in "\x1b\x9b")
        assert "x\\x1b[2Jforged\\x9b31m" in line
