"""``POST /requests/reject``'s body: the time is RFC 3339 text, never a number (found by the
API fuzzer: pydantic took ``-9420`` as a Unix time and the bulk rejection went ahead)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ostiary.core.errors import MalformedInput
from ostiary.server.body import parse_json
from ostiary.server.routes.requests import RejectManyBody


@pytest.mark.parametrize("value", ["-9420", "1765000000", "1765000000.5", "true", "[]"])
def test_a_time_that_is_not_text_is_malformed(value: str) -> None:
    body = f'{{"reason": "spam", "submitted_before": {value}}}'.encode()
    with pytest.raises(MalformedInput):
        parse_json(body, RejectManyBody)


def test_an_rfc3339_time_is_taken() -> None:
    body = b'{"reason": "spam", "submitted_before": "2026-12-01T00:00:00Z"}'
    parsed = parse_json(body, RejectManyBody)
    assert parsed.submitted_before == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_json(b'{"reason": "spam"}', RejectManyBody).submitted_before is None
