"""``ostiary ca status`` and ``ostiary ca doctor``: the CA's health, read without its keys.

Registered on the ``ca`` group at the end of :mod:`ostiary.cli.ca`. Both exit 1 when a
finding is an error (``status``: a CA certificate expired, a CRL past its nextUpdate;
``doctor``: any failed check), so that a cron job or a monitoring probe can run them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated

import typer
from rich.table import Table

from ostiary.authority.doctor import (
    check_clock,
    check_file_modes,
    check_lifetime,
    check_replicas,
    check_urls,
)
from ostiary.authority.health import Finding, Level, ca_certificates, worst
from ostiary.authority.status import StatusReport, collect_status
from ostiary.cli.console import out, print_table, shown
from ostiary.cli.options import CADir
from ostiary.cli.unlock import open_ca_store


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"


def status(
    directory: CADir = None,
    output: Annotated[
        Format, typer.Option("--format", help="'table' for people, 'json' for scripts.")
    ] = Format.TABLE,
) -> None:
    """Show the CA's health: CA certificates' expiry (every intermediate with its state),
    CRLs, certificates ending within 7 and 30 days, pending requests, database size,
    replicas, signing and SSH keys.

    Warnings come 90, 30 and 7 days before the root, the active or a retiring intermediate
    ends. Exit status: 1 when a
    finding is an error (a CA certificate expired, a CRL past its nextUpdate), else 0
    (warnings included).
    """
    with open_ca_store(directory) as ca:
        report = collect_status(ca.paths, ca.config, ca.store, now=datetime.now(UTC))
    if output is Format.JSON:
        out.print_json(json.dumps(report.as_json()))
    else:
        _print_report(report)
    if report.level is Level.ERROR:
        raise typer.Exit(1)


def doctor(directory: CADir = None) -> None:
    """Check the CA's setup: file modes, that the URLs in its certificates answer over plain
    HTTP from here (https ones are warned about), that the active intermediate outlives the
    longest certificate lifetime, the clock against the database's, and that every replica
    runs the same version. One line per finding with its fix; exit status 1 if any check fails.
    """
    now = datetime.now(UTC)
    with open_ca_store(directory) as ca:
        certificates = ca_certificates(ca.paths, ca.store, now=now)
        findings = [
            *check_file_modes(ca.paths, ca.config),
            *check_urls(certificates, ca.config),
            *check_lifetime(certificates, ca.config, now=now),
            *check_clock(ca.store),
            *check_replicas(ca.store, now=now),
        ]
    for finding in findings:
        out.print(finding.line(), markup=False, highlight=False)
    if worst(findings) is Level.ERROR:
        raise typer.Exit(1)


def _print_report(report: StatusReport) -> None:
    now = report.now
    ca_table = Table(title="CA certificates")
    for column in ("role", "state", "key id", "subject", "not_after", "left"):
        ca_table.add_column(column)
    for ca in report.ca:
        ca_table.add_row(
            ca.role,
            ca.state or "-",
            ca.key_id[:16],
            shown(ca.subject),
            f"{ca.not_after:%Y-%m-%d}",
            _left(ca.not_after - now),
        )
    print_table(ca_table)

    crl_table = Table(title="CRLs")
    for column in ("issuer", "number", "this_update", "next_update", "age", "source"):
        crl_table.add_column(column)
    for crl in report.crls:
        age = crl.age(now)
        crl_table.add_row(
            crl.issuer if crl.issuer == "root" else f"{crl.issuer} {(crl.key_id or '')[:8]}",
            "-" if crl.number is None else str(crl.number),
            f"{crl.this_update:%Y-%m-%d %H:%M}" if crl.this_update else "-",
            f"{crl.next_update:%Y-%m-%d %H:%M}" if crl.next_update else "-",
            _left(age) if age is not None else shown(crl.problem or "-"),
            shown(crl.source),
        )
    print_table(crl_table)

    figures = Table(title="Certificates and requests")
    figures.add_column("what")
    figures.add_column("value")
    for days, count in report.expiring.items():
        figures.add_row(f"certificates ending within {days} days", str(count))
    pending = str(report.pending_requests)
    if report.oldest_pending is not None:
        pending += f" (oldest {_left(now - report.oldest_pending)} old)"
    figures.add_row("pending requests", pending)
    size = "-" if report.database_bytes is None else _bytes(report.database_bytes)
    figures.add_row(f"database ({report.database})", size)
    print_table(figures)

    replicas = Table(title="Replicas")
    for column in ("instance", "host", "version", "started", "last seen"):
        replicas.add_column(column)
    for replica in report.replicas:
        replicas.add_row(
            replica.instance_id[:12],
            shown(replica.host),
            shown(replica.version),
            f"{replica.started_at:%Y-%m-%d %H:%M}",
            f"{_left(now - replica.last_seen)} ago",
        )
    if not report.replicas:
        replicas.add_row("(none running)", "", "", "", "")
    print_table(replicas)

    if report.signing_keys or any(k.present for k in report.ssh_keys):
        keys = Table(title="Keys")
        for column in ("key", "state"):
            keys.add_column(column)
        for key in report.signing_keys:
            keys.add_row(
                f"signing {shown(key.name)} v{key.version}",
                f"{key.key_type}, {key.backend}, certificate until {key.not_after:%Y-%m-%d}",
            )
        for ssh in report.ssh_keys:
            keys.add_row(
                f"SSH {ssh.kind} CA", shown(ssh.public_key or "?") if ssh.present else "none"
            )
        print_table(keys)
    _print_findings(report.findings)


def _print_findings(findings: list[Finding]) -> None:
    if not findings:
        out.print("ok: no warnings")
        return
    for finding in findings:
        out.print(finding.line(), markup=False, highlight=False)


def _left(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds >= 86400:
        return f"{sign}{seconds // 86400} d"
    if seconds >= 3600:
        return f"{sign}{seconds // 3600} h"
    if seconds >= 60:
        return f"{sign}{seconds // 60} min"
    return f"{sign}{seconds} s"


def _bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


__all__ = ["doctor", "status"]
