"""Secrets sealed with the CA password (ACME EAB keys): each way to open one and its twins."""

from __future__ import annotations

import pytest

from ostiary.core.errors import BadRequest, MalformedInput
from ostiary.signers.sealing import Sealer

SECRET = b"\x00\x01 an HMAC key \xff"


def test_a_sealed_secret_opens_with_the_password_and_its_row() -> None:
    sealed = Sealer(b"pw").seal(SECRET, associated=b"eab-1")
    assert SECRET not in sealed
    assert Sealer(b"pw").open(sealed, associated=b"eab-1") == SECRET
    assert "pw" not in repr(Sealer(b"pw"))


@pytest.mark.parametrize(
    ("password", "associated", "change"),
    [
        pytest.param(b"other", b"eab-1", None, id="fail/password"),
        pytest.param(b"pw", b"eab-2", None, id="fail/moved-to-another-row"),
        pytest.param(b"pw", b"eab-1", -1, id="fail/altered"),
        pytest.param(b"pw", b"eab-1", 0, id="fail/version"),
    ],
)
def test_a_sealed_secret_does_not_open_otherwise(
    password: bytes, associated: bytes, change: int | None
) -> None:
    sealed = bytearray(Sealer(b"pw").seal(SECRET, associated=b"eab-1"))
    if change is not None:
        sealed[change] ^= 0x01
    with pytest.raises(MalformedInput):
        Sealer(password).open(bytes(sealed), associated=associated)


def test_truncated_and_empty_are_refused() -> None:
    with pytest.raises(MalformedInput):
        Sealer(b"pw").open(b"\x01short", associated=b"")
    with pytest.raises(BadRequest):
        Sealer(b"")
