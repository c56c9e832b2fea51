"""``ostiary ca certs list``: the certificates this CA issued, to find one (a lost phone's).

Listing reads the database only: it never unlocks the CA key, so it asks for no password.
``--subject`` is a glob (``*``, ``?``, ``[ab]``), matched without regard to case against the
common name, the whole subject (``CN=alice,O=Home``) and each SAN, with or without its kind
(``alice@example.com``, ``email:alice@example.com``). Serials are printed in lower-case hex,
as everywhere else, and are what ``ostiary ca revoke`` takes; ``ca revoke --subject GLOB``
uses the same matching (see :func:`matching_certificates`).
"""

from __future__ import annotations

import fnmatch
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography import x509
from cryptography.x509.oid import NameOID
from rich.table import Table

from ostiary.cli.console import note, out, print_table, shown, table_width
from ostiary.cli.options import CADir
from ostiary.cli.unlock import open_ca_store
from ostiary.core.errors import BadRequest
from ostiary.core.printable import printable
from ostiary.store import CertificateRepository, Store
from ostiary.store.models import CertificateRecord, CertificateStatus

certs_app = typer.Typer(
    help="The certificates this CA issued (read from the database; no password needed).",
    no_args_is_help=True,
)

#: What ``--status`` accepts.
STATES = ("valid", "revoked", "expired")
#: Below this many columns the list is printed as blocks: a table would fold its cells.
WIDE_ENOUGH = 120
#: Rows shown unless ``--limit`` says otherwise.
_DEFAULT_LIMIT = 100


def matching_certificates(
    store: Store, pattern: str | None, *, state: str | None, now: datetime, limit: int | None
) -> list[CertificateRecord]:
    """Certificates in ``state`` whose names match the glob ``pattern``, newest first."""
    if state is not None and state not in STATES:
        raise BadRequest(f"--status must be valid, revoked or expired, not {state!r}")
    glob = pattern.strip().lower() if pattern is not None else None
    if glob == "":
        raise BadRequest("--subject needs a pattern, e.g. 'alice*' or '*phone*'")
    with store.transaction(read_only=True) as session:
        records = CertificateRepository(session).listed(
            now=now,
            state=state,
            containing=_literal_part(glob) if glob else None,
            limit=None if glob else limit,
        )
    found = [r for r in records if glob is None or _matches(r, glob)]
    return found[:limit] if limit is not None else found


def state_of(record: CertificateRecord, now: datetime) -> str:
    """``valid``, ``expired`` or ``revoked (reason)``."""
    if record.status == CertificateStatus.REVOKED.value:
        return f"revoked ({record.revocation_reason})"
    return "expired" if _utc(record.not_after) < now else "valid"


def describe_record(record: CertificateRecord) -> str:
    """``serial (subject)``: one certificate in an error line."""
    return f"{record.serial} ({record.subject})"


@certs_app.command("list")
def list_certificates(
    subject: Annotated[
        str | None,
        typer.Option(
            "--subject",
            help="Glob over the common name, the subject and the SANs ('alice*', '*phone*').",
            show_default=False,
        ),
    ] = None,
    status: Annotated[
        str | None,
        typer.Option("--status", help="valid, revoked or expired.", show_default=False),
    ] = None,
    output_format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="Show at most this many, newest first.")
    ] = _DEFAULT_LIMIT,
    directory: CADir = None,
    password_file: Annotated[
        Path | None,
        typer.Option(
            "--password-file",
            help="Accepted for uniform scripts; not needed (no key is used).",
            hidden=True,
        ),
    ] = None,
) -> None:
    """List issued certificates, newest first: serial, subject, SANs, not_after, status."""
    if output_format not in ("table", "json"):
        raise BadRequest(f"--format must be table or json, not {output_format!r}")
    now = datetime.now(UTC)
    with open_ca_store(directory) as opened:
        store = opened.store
        records = matching_certificates(store, subject, state=status, now=now, limit=limit)
    if output_format == "json":
        out.print_json(json.dumps([_as_json(r, now) for r in records]))
        return
    if not records:
        note("No certificates match.")
        return
    width = table_width()
    if width < WIDE_ENOUGH:  # a narrow terminal: one block per certificate, nothing cut
        for record in records:
            until = f"{_utc(record.not_after):%Y-%m-%d %H:%M}Z"
            out.print(f"{record.serial}  {state_of(record, now)}  until {until}", markup=False)
            for line in (record.subject, *record.sans):
                out.print(f"  {printable(line)}", markup=False)
    else:
        table = Table("serial", "subject", "SANs", "not_after", "status")
        for column in table.columns:
            column.no_wrap = True
        for record in records:
            table.add_row(
                record.serial,
                shown(record.subject),
                "\n".join(shown(san) for san in record.sans) or "-",
                f"{_utc(record.not_after):%Y-%m-%d %H:%M}Z",
                state_of(record, now),
            )
        print_table(table)
    if len(records) == limit:
        note(f"(the newest {limit}; narrow with --subject/--status or raise --limit)")


def _as_json(record: CertificateRecord, now: datetime) -> dict[str, Any]:
    revoked = record.status == CertificateStatus.REVOKED.value
    return {
        "serial": record.serial,
        "subject": record.subject,
        "sans": list(record.sans),
        "not_before": _utc(record.not_before).isoformat(),
        "not_after": _utc(record.not_after).isoformat(),
        "status": "revoked" if revoked else state_of(record, now),
        "revoked_at": _utc(record.revoked_at).isoformat() if record.revoked_at else None,
        "revocation_reason": record.revocation_reason,
        "profile": record.profile,
        "provisioner": record.provisioner,
        "fingerprint_sha256": record.fingerprint_sha256,
    }


def _matches(record: CertificateRecord, glob: str) -> bool:
    texts = [record.subject, *_common_names(record.subject)]
    for san in record.sans:
        texts += [san, san.partition(":")[2]]
    return any(fnmatch.fnmatchcase(text.lower(), glob) for text in texts)


def _common_names(subject: str) -> list[str]:
    try:
        name = x509.Name.from_rfc4514_string(subject)
    except ValueError:
        return []
    return [str(a.value) for a in name.get_attributes_for_oid(NameOID.COMMON_NAME)]


def _literal_part(glob: str) -> str | None:
    """The longest run without wildcards: the database narrows on it, the glob decides."""
    runs = re.split(r"[*?\[\]]", glob)
    longest = max(runs, key=len)
    return longest or None


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


__all__ = ["certs_app", "describe_record", "matching_certificates", "state_of"]
