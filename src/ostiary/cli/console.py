"""Output for people: one Rich console for stdout, one for stderr, and the error line."""

from __future__ import annotations

import sys

from rich.console import Console

#: Results (a token, a fingerprint, JSON) go to stdout, undecorated, for scripts.
out = Console(highlight=False, soft_wrap=True)
#: Progress, notes and errors go to stderr.
err = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> None:
    """Print ``error: message`` on stderr as one line and exit with ``code``."""
    err.print(f"[bold red]error:[/] {_one_line(message)}", markup=True)
    sys.exit(code)


def note(message: str) -> None:
    err.print(message, markup=False)


def _one_line(message: str) -> str:
    from rich.markup import escape

    return escape(" ".join(message.split()))
