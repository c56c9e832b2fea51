"""Requester text made safe for terminals and logs: control characters become visible."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ostiary.core.printable import printable


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        pytest.param("garage sensor", "garage sensor", id="ok/plain"),
        pytest.param("Zürich ключ 鍵", "Zürich ключ 鍵", id="ok/unicode"),
        pytest.param("[red]x[/red]", "[red]x[/red]", id="ok/markup-is-not-ours-to-escape"),
        pytest.param("\x1b[2Jgone", "\\x1b[2Jgone", id="fail/esc-clear-screen"),
        pytest.param("a\rforged", "a\\rforged", id="fail/carriage-return"),
        pytest.param("a\nb\tc", "a\\nb\\tc", id="fail/newline-tab"),
        pytest.param("\x9b31mred", "\\x9b31mred", id="fail/c1-csi"),
        pytest.param("\x7f\x00", "\\x7f\\x00", id="fail/del-nul"),
        pytest.param("\u202eevil", "\\u202eevil", id="fail/bidi-override"),
        pytest.param("a\u2028b", "a\\u2028b", id="fail/line-separator"),
    ],
)
def test_control_characters_are_shown_as_escapes(raw: str, shown: str) -> None:
    assert printable(raw) == shown


@given(st.text())
def test_no_control_character_survives(text: str) -> None:
    out = printable(text)
    assert not any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in out)
    assert "\u202e" not in out and "\u2066" not in out
