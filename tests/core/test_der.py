"""The hand-written DER pieces agree with asn1crypto, and read back what they write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from asn1crypto import core as asn1_core
from hypothesis import given
from hypothesis import strategies as st

from ostiary.core import der


@pytest.mark.parametrize("size", [0, 1, 127, 128, 255, 256, 65_535, 65_536, 16_777_216])
def test_tlv_length_is_minimal_as_asn1crypto_writes_it(size: int) -> None:
    content = b"\x5a" * size
    assert der.tlv(der.OCTET_STRING, content) == asn1_core.OctetString(content).dump()


@given(
    items=st.lists(
        st.tuples(st.sampled_from([0x02, 0x04, 0x30, 0xA0, 0xA2]), st.binary(max_size=300)),
        max_size=5,
    )
)
def test_elements_read_back_what_tlv_writes(items: list[tuple[int, bytes]]) -> None:
    encoded = [der.tlv(tag, content) for tag, content in items]
    assert der.elements(b"".join(encoded)) == [
        der.Element(tag, whole, content)
        for (tag, content), whole in zip(items, encoded, strict=True)
    ]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x30", id="fail/tag-only"),
        pytest.param(b"\x30\x05\x00", id="fail/length-past-end"),
        pytest.param(b"\x30\x80\x00\x00", id="fail/indefinite-length"),
        pytest.param(b"\x30\x82\x01", id="fail/truncated-long-length"),
        pytest.param(b"\x1f\x81\x00\x00", id="fail/multi-octet-tag"),
    ],
)
def test_elements_refuse_what_is_not_der(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"DER|tag"):
        der.elements(data)


@pytest.mark.parametrize(
    ("when", "text"),
    [
        pytest.param(
            datetime(2026, 11, 23, 12, 0, 5, 999, tzinfo=UTC), b"20261123120005Z", id="utc"
        ),
        pytest.param(datetime(2026, 11, 23, 12, 0, 5), b"20261123120005Z", id="naive-is-utc"),
        pytest.param(
            datetime(2026, 11, 23, 14, 0, tzinfo=timezone(timedelta(hours=2))),
            b"20261123120000Z",
            id="offset-to-utc",
        ),
        pytest.param(
            datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC), b"09990102030405Z", id="year-padded"
        ),
    ],
)
def test_generalized_time_is_utc_whole_seconds(when: datetime, text: bytes) -> None:
    assert der.generalized_time(when) == der.tlv(der.GENERALIZED_TIME, text)


def test_enumerated_stays_in_one_octet() -> None:
    assert der.enumerated(6) == b"\x0a\x01\x06"
    with pytest.raises(ValueError, match="ENUMERATED"):
        der.enumerated(128)
