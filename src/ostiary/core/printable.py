r"""Text from outside (a requester's note, a CSR's subject, a URL path) made safe to show.

A terminal obeys the control characters in what it prints: ``ESC [ 2 J`` clears the screen,
``CR`` returns to the start of the line so the rest overwrites it, and the C1 ``CSI`` (U+009B)
starts an escape sequence on its own. Bidirectional overrides reorder what follows. Printed
as they are, they can restyle, hide or forge the lines around them (in a table of requests,
in a log). :func:`printable` shows each of them as a visible escape instead (``\x1b``,
``\r``, ``\x9b``, ``\u202e``), so that the officer sees that something was there.
"""

from __future__ import annotations

import unicodedata

#: Bidirectional marks, embeddings, overrides and isolates (Unicode category Cf).
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _unsafe(character: str) -> bool:
    return character in _BIDI or unicodedata.category(character) in ("Cc", "Zl", "Zp")


def _visible(character: str) -> str:
    named = _NAMED.get(character)
    if named is not None:
        return named
    code = ord(character)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every C0/C1 control character, DEL, line/paragraph separator and
    bidirectional control replaced by a visible escape; everything else unchanged.
    """
    if text.isprintable():  # the common case: nothing to do
        return text
    return "".join(_visible(c) if _unsafe(c) else c for c in text)


__all__ = ["printable"]
