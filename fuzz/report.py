"""Write docs/RELIABILITY.md from the latest runs: ``python fuzz/report.py``.

Reads what the runs left in ``fuzz/results/``:

- ``parsers.json``: ``fuzz/run.py`` (executions and crashes per parser harness);
- ``api.json``: ``fuzz/api.py`` (HTTP API cases tried, answered 2xx, failures, 5xx);
- ``tls.json``: ``tests/gateway/test_tls_posture.py`` (sslyze against Mozilla "intermediate");
- ``figures.jsonl``: what the fault and abuse tests record (``tests/figures.py``) when
  ``OSTIARY_FIGURES`` names that file: database faults (PostgreSQL and SQLite) and the
  idle/slow-header connection runs;

and, from the repository itself, the crashes found and fixed (the inputs kept under
``tests/fuzz_regressions/inputs/``, one per fixed defect) and the limits in force (the
code's own constants, imported). A figure with no run behind it is written as "not
measured yet", never guessed. ``--check`` exits 1 when the document differs from what the
results give (for CI after a run), without writing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
REGRESSIONS = ROOT / "tests" / "fuzz_regressions" / "inputs"
DOCUMENT = ROOT / "docs" / "RELIABILITY.md"
NOT_MEASURED = "not measured yet"

#: Regression inputs are named after their harness (``csr-bad-version.der``); the few
#: whose prefix is not the harness name.
_PREFIXES = {"config": "config_toml", "device": "device_attest", "ssh": "ssh_key"}


def _load(name: str) -> Any:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def _stamp(name: str) -> str:
    path = RESULTS / name
    if not path.exists():
        return NOT_MEASURED
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%d")


def fixed_crashes() -> Counter[str]:
    found: Counter[str] = Counter()
    for path in sorted(REGRESSIONS.iterdir()) if REGRESSIONS.exists() else ():
        prefix = path.name.split("-", 1)[0]
        found[_PREFIXES.get(prefix, prefix)] += 1
    return found


def load_figures(path: Path | None = None) -> list[dict[str, Any]]:
    path = path or RESULTS / "figures.jsonl"
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def fault_summary(figures: list[dict[str, Any]]) -> list[str]:
    faults = [f for f in figures if f.get("kind") == "database-fault"]
    if not faults:
        return [
            f"| fault injection: faults injected and survived | {NOT_MEASURED} |",
            f"| certificates lost (must be 0) | {NOT_MEASURED} |",
        ]
    return [
        f"| fault injection: faults injected and survived | {len(faults)} "
        f"({sum(f['requests'] for f in faults):,} requests, "
        f"{sum(f['other_5xx'] for f in faults)} 5xx other than 503) |",
        f"| certificates lost (must be 0) | {sum(f['lost'] for f in faults)} |",
    ]


def fault_section(figures: list[dict[str, Any]]) -> list[str]:
    """The database faults under issuance load, and the connection-abuse runs."""
    faults = [f for f in figures if f.get("kind") == "database-fault"]
    out = ["## Database faults under issuance load", ""]
    if faults:
        rows = [
            [f["backend"], f["case"], f["requests"], f["issued"], f["refused_503"],
             f["other_5xx"], f["lost"], f.get("longest_s", "-")]
            for f in faults
        ]  # fmt: skip
        out += _table(
            ["database", "fault", "requests", "issued", "503 + Retry-After", "other 5xx",
             "certificates lost", "longest answer (s)"],
            rows,
        )  # fmt: skip
        out += [
            "",
            f"{len(faults)} faults injected and survived; "
            f"{sum(f['requests'] for f in faults)} requests; "
            f"{sum(f['other_5xx'] for f in faults)} 5xx other than 503; "
            f"{sum(f['lost'] for f in faults)} certificates lost.",
        ]
    else:
        out.append("No figures recorded (run the tests with `OSTIARY_FIGURES`).")
    out += ["", "## Connection abuse", ""]
    abuse = [f for f in figures if f.get("kind") == "abuse"]
    if abuse:
        out += _table(
            ["listeners", "idle connections", "slow-header clients", "left open",
             "cut after (s)", "RSS MB / bound",
             "legitimate request answered (issuance; gateway: a proxied request)"],
            [
                [a["listener"], a["idle"], a["slow"], a["still_open"], a["cut_after_s"],
                 f"{a['rss_mb']} / {a['rss_bound_mb']}", a["legitimate_issued"]]
                for a in abuse
            ],
        )  # fmt: skip
    else:
        out.append("No figures recorded.")
    return [*out, ""]


def api_rows() -> list[str]:
    counts = _load("api.json")
    if not counts:
        return [f"| HTTP API requests tried (schemathesis) | {NOT_MEASURED} |"]
    rows = []
    for backend, run in sorted(counts.items()):
        rows.append(
            f"| HTTP API requests tried, {backend} ({run['examples']} examples per operation, "
            f"stateful) | {run['cases']:,} ({run['deep']:,} answered 2xx) |"
        )
        rows.append(
            f"| 5xx seen, {backend} (operation and status pairs; must be 0) "
            f"| {run['server_errors']} |"
        )
        rows.append(
            f"| other check failures, {backend} (schema, accepted bad input) "
            f"| {run['failures'] - run['server_errors']} |"
        )
    return rows


def parser_table() -> list[str]:
    runs = _load("parsers.json") or []
    fixed = fixed_crashes()
    names = sorted({r["harness"] for r in runs} | set(fixed))
    if not names:
        return [NOT_MEASURED]
    by_name = {r["harness"]: r for r in runs}
    lines = [
        "| Harness | Executions (last run) | Seconds | Crash in last run "
        "| Crashes found and fixed |",
        "|---|---:|---:|---|---:|",
    ]
    for name in names:
        run = by_name.get(name)
        if run is None:
            lines.append(f"| `{name}` | {NOT_MEASURED} | | | {fixed[name]} |")
            continue
        crashed = "**yes**" if run["crashed"] else "no"
        lines.append(
            f"| `{name}` | {run['runs']:,} | {run['seconds']} | {crashed} | {fixed[name]} |"
        )
    total = sum(r["runs"] for r in runs)
    lines.append(f"| **all** | **{total:,}** | | | **{sum(fixed.values())}** |")
    return lines


def tls_rows() -> list[str]:
    scans = _load("tls.json")
    if not scans:
        return [f"| TLS posture (sslyze, Mozilla intermediate) | {NOT_MEASURED} |"]
    rows = []
    for listener, found in sorted(scans.items()):
        issues = found["issues"]
        versions = ", ".join(v for v, on in sorted(found["versions"].items()) if on)
        verdict = "passes" if not issues else "passes except: " + "; ".join(issues.values())
        rows.append(
            f"| TLS posture, {listener}: {found['profile']} | {verdict} (protocols: "
            f"{versions}; compression: {'on' if found['compression'] else 'off'}; client "
            f"renegotiation: {'on' if found['client_renegotiation'] else 'off'}; chain served: "
            f"{found['chain_served']} certificates, verifies: {found['chain_verifies']}) |"
        )
    return rows


def limits_rows() -> list[str]:
    """The limits as the code sets them (imported, so the table cannot drift from it)."""
    from ostiary import tls_accept
    from ostiary.gateway import http as gateway_http
    from ostiary.gateway.config import GatewayConfig
    from ostiary.server import body, credentials, models, public_http, tls_scope
    from ostiary.server.limits import AddressLimiter, Limits, ProvisionerLimiter

    rows = []
    limits = Limits.default()
    for field in dataclasses.fields(limits):
        limiter = getattr(limits, field.name)
        if isinstance(limiter, AddressLimiter):
            per = "provisioner" if isinstance(limiter, ProvisionerLimiter) else "address"
            rows.append(
                f"| per-{per} rate: {limiter.what} | burst {limiter.burst}, then one every "
                f"{limiter.interval:g} s; 429 with Retry-After |"
            )
    constants = [
        ("request body (JSON routes)", body, "MAX_BODY_SIZE", "bytes"),
        ("PEM field", models, "MAX_PEM", "bytes"),
        ("token field", models, "MAX_TOKEN", "bytes"),
        ("Authorization header", credentials, "MAX_AUTHORIZATION", "bytes"),
        ("plain-HTTP listener: headers per request", public_http, "MAX_HEADERS", ""),
        ("plain-HTTP listener: keep-alive", public_http, "KEEP_ALIVE_SECONDS", "s"),
        ("HTTPS listener: TLS handshake within", tls_accept, "HANDSHAKE_TIMEOUT", "s"),
        ("HTTPS listener: request head within", tls_scope, "HEAD_TIMEOUT", "s"),
        ("open connections per listener (`--max-connections`)", tls_scope, "MAX_CONNECTIONS", ""),
    ]
    for label, module, name, unit in constants:
        value = getattr(module, name, None)
        shown = NOT_MEASURED if value is None else f"{value:,} {unit}".strip()
        rows.append(f"| {label} (`{module.__name__}.{name}`) | {shown} |")
    for name in ("handshake_timeout_seconds", "idle_timeout_seconds"):
        field_info = GatewayConfig.model_fields.get(name)
        if field_info is not None:
            rows.append(f"| gateway `{name}` (default) | {field_info.default:g} s |")
    rows.append(
        f"| gateway: request head within (`ostiary.gateway.http.HEAD_TIMEOUT`) "
        f"| {gateway_http.HEAD_TIMEOUT:g} s |"
    )
    field_info = GatewayConfig.model_fields.get("max_connections")
    if field_info is not None:
        rows.append(
            f"| gateway `max_connections` (default; per worker, handshakes included) "
            f"| {field_info.default:,} |"
        )
    return rows


def audit_rows() -> list[str]:
    """The audit fail-closed tests (each holds the fault in an ``audit_refused(...)``
    block), counted from the repository itself.
    """
    texts = {path: path.read_text() for path in sorted((ROOT / "tests").glob("*/test_*.py"))}
    found = {path: text.count("audit_refused(") for path, text in texts.items()}
    tests = sum(found.values())
    areas = ", ".join(sorted({path.parent.name for path, n in found.items() if n}))
    return [
        "| audit fail-closed: entry paths refused (503 `audit-unavailable`, nothing changed) "
        f"while the audit log cannot be written | {tests} tests ({areas}) |"
    ]


def render(figures: list[dict[str, Any]] | None = None) -> str:
    figures = load_figures() if figures is None else figures
    lines = [
        "# Reliability and security figures",
        "",
        "<!-- Generated by `python fuzz/report.py` from fuzz/results/; do not edit by hand. -->",
        "",
        "What was tried against Ostiary and what survived, from the latest runs of the",
        "campaigns in `fuzz/` and the suite (issue 19). Each figure names the run it comes",
        'from; a figure no run has produced yet says "not measured yet". How to run them:',
        "[fuzzing.md](fuzzing.md) (parsers), `python fuzz/api.py --examples N` (HTTP API),",
        "`pytest tests/gateway/test_tls_posture.py` (TLS), `OSTIARY_FIGURES=fuzz/results/"
        "figures.jsonl ./scripts/test tests/server/test_database_faults.py "
        "tests/server/test_sqlite_faults.py tests/server/test_abuse_limits.py "
        "tests/gateway/test_connection_abuse.py` (faults, abuse).",
        "",
        "## Summary",
        "",
        "| Figure | Value |",
        "|---|---|",
        *api_rows(),
        *fault_summary(figures),
        *audit_rows(),
        *tls_rows(),
        "",
        *fault_section(figures),
        f"## Parser fuzzing (atheris; last run {_stamp('parsers.json')})",
        "",
        "A crash is any exception other than the errors the entry point documents. Each one",
        "found is fixed and kept as a regression test in `tests/fuzz_regressions/`.",
        "",
        *parser_table(),
        "",
        "## Limits in force",
        "",
        "Read from the code's constants when this page was generated.",
        "",
        "| Limit | Value |",
        "|---|---|",
        *limits_rows(),
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        return 0 if DOCUMENT.exists() and DOCUMENT.read_text() == text else 1
    DOCUMENT.write_text(text)
    print(f"wrote {DOCUMENT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
