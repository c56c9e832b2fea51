"""Fuzz the HTTP API longer than the suite does: ``python fuzz/api.py --examples N``.

The same campaign as ``tests/server/test_api_fuzz.py`` (tests/server/api_fuzz.py): a fresh CA,
a live ``ostiary ca serve`` on SQLite and on PostgreSQL, every operation of its
``/openapi.json`` with credentials supplied through schemathesis hooks, then a stateful run.
Prints the cases run, the cases answered 2xx and every distinct failure; exits 1 on any.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import (
    DEFAULT_POSTGRES_DSN,
    POSTGRES_DSN_ENV,
    fresh_postgres_database,
)
from tests.server.api_fuzz import FuzzResult, fuzz_api, prepare_target
from tests.server.conftest import PASSWORD, make_provisioners
from tests.server.processes import make_ca_folder, serving

from ostiary.authority.folder import CAPaths, init_ca_folder
from ostiary.config import CAConfig
from ostiary.store import sqlite_url_for


@contextmanager
def database(backend: str, folder: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield sqlite_url_for(folder / "ostiary.db")
        return
    with fresh_postgres_database(os.environ.get(POSTGRES_DSN_ENV, DEFAULT_POSTGRES_DSN)) as url:
        yield url


def campaign(backend: str, examples: int, steps: int, folder: Path) -> FuzzResult:
    template = init_ca_folder(
        CAPaths(folder / "template"),
        CAConfig(name="API Fuzz"),
        PASSWORD,
        now=datetime.now(UTC) - timedelta(days=1),
    )
    provisioners = make_provisioners()
    with database(backend, folder) as url:
        ca = make_ca_folder(template, provisioners, url, folder / "ca")
        with serving(ca, folder / "serve.log") as server:
            return fuzz_api(
                prepare_target(server, ca, provisioners), examples=examples, steps=steps
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100, help="cases per operation")
    parser.add_argument("--steps", type=int, default=10, help="steps per stateful scenario")
    parser.add_argument(
        "--backend", choices=["sqlite", "postgresql"], action="append", help="default: both"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "api.json",
        help="write the counts here too (fuzz/report.py reads them)",
    )
    args = parser.parse_args()
    failed = False
    counts: dict[str, dict[str, int]] = {}
    for backend in args.backend or ["sqlite", "postgresql"]:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"ostiary-fuzz-{backend}-") as folder:
            result = campaign(backend, args.examples, args.steps, Path(folder))
        elapsed = time.monotonic() - started
        print(
            f"{backend}: {result.cases} cases, {result.deep} answered 2xx, "
            f"{len(result.failures)} failures, {elapsed:.0f} s"
        )
        counts[backend] = {
            "examples": args.examples,
            "cases": result.cases,
            "deep": result.deep,
            "failures": len(result.failures),
            "server_errors": sum(
                1 for codes in result.statuses.values() for code in codes if code >= 500
            ),
        }
        for title, detail in result.failures.items():
            print(f"  FAIL {title}\n{detail}\n")
        failed = failed or bool(result.failures)
    # Merged by backend into the earlier counts, so that one backend's run updates its own.
    args.json.parent.mkdir(parents=True, exist_ok=True)
    earlier = json.loads(args.json.read_text()) if args.json.exists() else {}
    args.json.write_text(json.dumps({**earlier, **counts}, indent=2, sort_keys=True) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
