"""The TPM structures in an attestation are parsed by libtss2 from untrusted bytes: whatever
arrives, the result is a parsed structure or :class:`MalformedInput`, never another error."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ostiary.core.errors import MalformedInput, OstiaryError
from ostiary.provisioners.tpm_statement import (
    AttestationStatement,
    _tss,
    public_key_of_area,
    unmarshal_tpm,
)

KINDS = ["TPMS_ATTEST", "TPMT_PUBLIC", "TPMT_SIGNATURE"]


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=600),
    kind=st.sampled_from(["TPMS_ATTEST", "TPMT_PUBLIC", "TPMT_SIGNATURE"]),
)
def test_garbage_structures_are_malformed_input(data: bytes, kind: str) -> None:
    tss = _tss()
    try:
        parsed = unmarshal_tpm(getattr(tss, kind), data, "field")
    except MalformedInput:
        return
    if kind == "TPMT_PUBLIC":
        parsed.get_name()
        try:
            public_key_of_area(tss, parsed)
        except OstiaryError:
            pass


@settings(max_examples=200, deadline=None)
@given(
    nonce=st.text(max_size=80),
    chain=st.lists(st.binary(max_size=64), max_size=6),
    blob=st.binary(max_size=64),
)
def test_garbage_statements_are_malformed_input(
    nonce: str, chain: list[bytes], blob: bytes
) -> None:
    encoded = base64.b64encode(blob).decode()
    document = {
        "nonce": nonce,
        "certify_info": encoded,
        "signature": encoded,
        "public_area": encoded,
        "ak_chain": [base64.b64encode(c).decode() for c in chain],
    }
    with pytest.raises(MalformedInput):
        AttestationStatement.from_json(document)


@pytest.mark.parametrize(
    "template", ["rsa2048", "ecc256"], ids=["fail/rsa-no-modulus", "fail/ec-no-point"]
)
def test_public_area_without_a_key_is_malformed_input(template: str) -> None:
    tss = _tss()
    public = tss.TPMT_PUBLIC.parse(template)  # a template: the unique field (the key) is empty
    with pytest.raises(MalformedInput, match="holds no valid"):
        public_key_of_area(tss, public)
