"""Output for people: one Rich console for stdout, one for stderr, and the error line.

Text that came from outside (a requester's note or subject, a certificate's names, a
server's problem detail) goes through :func:`shown` before it reaches Rich markup (a table
cell, ``out.print``): control characters become visible escapes
(:func:`ostiary.core.printable.printable`) and ``[...]`` is escaped, so it can neither
restyle nor forge the lines around it. :func:`note` and :func:`fail` print no markup and
make control characters visible themselves.
"""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ostiary.core.printable import printable

#: Results (a token, a fingerprint, JSON) go to stdout, undecorated, for scripts.
out = Console(highlight=False, soft_wrap=True)
#: Progress, notes and errors go to stderr.
err = Console(stderr=True, highlight=False, soft_wrap=True)


#: The width tables get in a pipe or a file: wide enough that no row is ever folded.
PIPE_WIDTH = 1000


def table_width() -> int:
    """The width to lay a table out in: the terminal's (or ``COLUMNS``), and in a pipe or a
    file, where Rich would assume 80 columns and fold every cell, all the room it needs.
    """
    if "COLUMNS" in os.environ or out.is_terminal:
        return out.width
    return PIPE_WIDTH


def print_table(table: Table) -> None:
    """Print ``table`` on stdout at :func:`table_width` (a pipe gets every cell whole)."""
    width = table_width()
    if width == out.width:
        out.print(table)
    else:  # Console.print never lays out wider than its console: a console of that width
        Console(file=out.file, width=width, highlight=False, soft_wrap=True).print(table)


def fail(message: str, code: int = 1) -> None:
    """Print ``error: message`` on stderr as one line and exit with ``code``."""
    err.print(f"[bold red]error:[/] {_one_line(message)}", markup=True)
    sys.exit(code)


def note(message: str) -> None:
    """A line for people on stderr, printed as it is except for control characters."""
    err.print(printable(message), markup=False)


def shown(text: str | None) -> str:
    """Outside text ready for Rich markup: control characters visible, markup escaped."""
    return escape(printable(text or ""))


def _one_line(message: str) -> str:
    return escape(printable(" ".join(message.split())))
