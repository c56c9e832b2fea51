"""CRLs: what build_crl writes, that it equals cryptography's builder, and who accepts it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import crl as asn1_crl
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ostiary.core.crl import REASON_CODES, RevokedEntry, build_crl, crl_is_current
from ostiary.core.errors import BadRequest
from ostiary.core.keys import KeyType, signature_hash_for

from ..conftest import NOW, TestCA, make_test_ca, require_tool
from ..pkilint_helper import lint_crl

DAY = timedelta(days=1)
LISTED_REASONS = [r for r in x509.ReasonFlags if r is not x509.ReasonFlags.remove_from_crl]


def crl_of(ca: TestCA, entries: Sequence[RevokedEntry], **kwargs: object) -> bytes:
    options: dict[str, object] = {"crl_number": 1, "this_update": NOW, "next_update": NOW + DAY}
    options.update(kwargs)
    return build_crl(ca.intermediate, ca.intermediate_key, entries, **options)  # type: ignore[arg-type]


def library_crl(
    ca: TestCA,
    entries: Sequence[RevokedEntry],
    *,
    crl_number: int,
    this_update: datetime,
    next_update: datetime,
) -> x509.CertificateRevocationList:
    """The same CRL made with cryptography's builder: the reference for the fast path."""
    revoked = []
    for entry in entries:
        builder = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial_number)
            .revocation_date(entry.revoked_at)
        )
        if entry.reason is not None and entry.reason is not x509.ReasonFlags.unspecified:
            builder = builder.add_extension(x509.CRLReason(entry.reason), critical=False)
        revoked.append(builder.build())
    ski = ca.intermediate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateRevocationListBuilder(
            issuer_name=ca.intermediate.subject,
            last_update=this_update,
            next_update=next_update,
            revoked_certificates=revoked,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .sign(ca.intermediate_key, signature_hash_for(ca.intermediate_key))
    )


@pytest.fixture(
    scope="module",
    params=[KeyType.P256, KeyType.P384, KeyType.ED25519, KeyType.RSA2048],
    ids=lambda k: str(k),
)
def any_ca(request: pytest.FixtureRequest) -> TestCA:
    return make_test_ca(request.param)


# ------------------------------------------------------------------ equal to the library

_zones: list[tzinfo | None] = [
    UTC,
    None,  # naive: taken as UTC, by cryptography too
    timezone(timedelta(hours=5, minutes=30)),
    timezone(timedelta(hours=-8)),
]
_offsets: st.SearchStrategy[Any] = st.sampled_from(_zones)
_entries = st.lists(
    st.builds(
        RevokedEntry,
        serial_number=st.integers(min_value=1, max_value=2**159 - 1),
        revoked_at=st.datetimes(
            min_value=datetime(1950, 1, 2), max_value=datetime(9998, 12, 31), timezones=_offsets
        ),
        reason=st.none() | st.sampled_from(LISTED_REASONS),
    ),
    max_size=40,
    unique_by=lambda entry: entry.serial_number,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(entries=_entries, crl_number=st.integers(min_value=0, max_value=2**159 - 1))
def test_crl_is_byte_for_byte_what_cryptography_builds(
    any_ca: TestCA, entries: list[RevokedEntry], crl_number: int
) -> None:
    this_update = NOW.replace(microsecond=123456)
    ours = x509.load_der_x509_crl(
        crl_of(any_ca, entries, crl_number=crl_number, this_update=this_update)
    )
    reference = library_crl(
        any_ca, entries, crl_number=crl_number, this_update=this_update, next_update=NOW + DAY
    )
    assert ours.tbs_certlist_bytes == reference.tbs_certlist_bytes
    assert ours.signature_algorithm_oid == reference.signature_algorithm_oid
    assert ours.is_signature_valid(any_ca.intermediate_key.public_key())
    assert [r.serial_number for r in ours] == [e.serial_number for e in entries]


def test_hundred_thousand_entries_equal_the_library_and_verify(test_ca: TestCA) -> None:
    entries = [
        RevokedEntry(
            (i * 7919) << 64 | i,
            NOW - timedelta(seconds=i),
            LISTED_REASONS[i % len(LISTED_REASONS)],
        )
        for i in range(1, 100_001)
    ]
    ours = x509.load_der_x509_crl(crl_of(test_ca, entries))
    reference = library_crl(test_ca, entries, crl_number=1, this_update=NOW, next_update=NOW + DAY)
    assert ours.tbs_certlist_bytes == reference.tbs_certlist_bytes
    assert ours.is_signature_valid(test_ca.intermediate_key.public_key())


@pytest.mark.slow
def test_million_entry_crl_builds_in_linear_time(test_ca: TestCA) -> None:
    revoked_at = NOW - DAY
    entries = [
        RevokedEntry(i << 96 | 0xABCDEF, revoked_at, x509.ReasonFlags.superseded)
        for i in range(1, 1_000_001)
    ]
    started = time.process_time()
    der = crl_of(test_ca, entries)
    elapsed = time.process_time() - started
    # CPU time, not wall time, so that a busy machine cannot trip it: 15 s still fails an
    # O(n^2) regression (cryptography's add_revoked_certificate loop) loudly. The speed target
    # itself is measured by bench/run.py crl.
    assert elapsed < 15, f"a million-entry CRL took {elapsed:.1f} s of CPU"
    assert len(x509.load_der_x509_crl(der)) == 1_000_000


# ------------------------------------------------------------------------ what it holds


def test_crl_carries_issuer_aki_number_and_times(test_ca: TestCA) -> None:
    crl = x509.load_der_x509_crl(crl_of(test_ca, [], crl_number=41))
    ski = test_ca.intermediate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert aki.value.key_identifier == ski.value.digest
    assert aki.value.authority_cert_issuer is None
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 41
    assert crl.issuer == test_ca.intermediate.subject
    assert (crl.last_update_utc, crl.next_update_utc) == (NOW, NOW + DAY)
    assert not any(extension.critical for extension in crl.extensions)


def test_empty_crl_leaves_the_revoked_list_out(test_ca: TestCA) -> None:
    der = crl_of(test_ca, [])
    parsed = asn1_crl.CertificateList.load(der)
    # RFC 5280 5.1.2.6: absent, not an empty SEQUENCE.
    assert not parsed["tbs_cert_list"]["revoked_certificates"].contents
    assert len(x509.load_der_x509_crl(der)) == 0


@pytest.mark.parametrize(
    ("reason", "listed_reason"),
    [
        pytest.param(
            x509.ReasonFlags.key_compromise, x509.ReasonFlags.key_compromise, id="ok/key-compromise"
        ),
        pytest.param(x509.ReasonFlags.superseded, x509.ReasonFlags.superseded, id="ok/superseded"),
        pytest.param(
            x509.ReasonFlags.certificate_hold, x509.ReasonFlags.certificate_hold, id="ok/hold"
        ),
        pytest.param(x509.ReasonFlags.unspecified, None, id="ok/unspecified-is-left-out"),
        pytest.param(None, None, id="ok/no-reason"),
    ],
)
def test_entry_carries_reason_code_unless_unspecified(
    test_ca: TestCA, reason: x509.ReasonFlags | None, listed_reason: x509.ReasonFlags | None
) -> None:
    crl = x509.load_der_x509_crl(crl_of(test_ca, [RevokedEntry(0x1234, NOW - DAY, reason)]))
    entry = crl.get_revoked_certificate_by_serial_number(0x1234)
    assert entry is not None
    assert entry.revocation_date_utc == NOW - DAY
    if listed_reason is None:
        assert len(entry.extensions) == 0
    else:
        extension = entry.extensions.get_extension_for_class(x509.CRLReason)
        assert (extension.value.reason, extension.critical) == (listed_reason, False)


@pytest.mark.parametrize(
    ("revoked_at", "tag"),
    [
        pytest.param(datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC), 0x17, id="ok/utctime-2049"),
        pytest.param(datetime(2050, 1, 1, tzinfo=UTC), 0x18, id="ok/generalizedtime-2050"),
        pytest.param(datetime(1950, 1, 1, tzinfo=UTC), 0x17, id="ok/utctime-1950"),
    ],
)
def test_revocation_date_encoding_follows_rfc5280(
    test_ca: TestCA, revoked_at: datetime, tag: int
) -> None:
    der = crl_of(test_ca, [RevokedEntry(7, revoked_at)])
    entry = asn1_crl.CertificateList.load(der)["tbs_cert_list"]["revoked_certificates"][0]
    time_field = entry["revocation_date"].chosen
    assert time_field.tag == tag
    assert time_field.native == revoked_at


def test_revocation_dates_in_other_zones_are_written_in_utc(test_ca: TestCA) -> None:
    local = datetime(2026, 11, 23, 14, 0, 0, 999, tzinfo=timezone(timedelta(hours=2)))
    crl = x509.load_der_x509_crl(crl_of(test_ca, [RevokedEntry(9, local)]))
    entry = crl.get_revoked_certificate_by_serial_number(9)
    assert entry is not None
    assert entry.revocation_date_utc == datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_every_listed_reason_has_its_rfc5280_code() -> None:
    assert REASON_CODES[x509.ReasonFlags.key_compromise] == 1
    assert REASON_CODES[x509.ReasonFlags.remove_from_crl] == 8
    assert REASON_CODES[x509.ReasonFlags.aa_compromise] == 10
    assert 7 not in REASON_CODES.values()


# ---------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("entries", "options", "message"),
    [
        pytest.param(
            [],
            {"next_update": NOW - DAY},
            "must be after",
            id="fail/next-update-before-this-update",
        ),
        pytest.param(
            [], {"next_update": NOW}, "must be after", id="fail/next-update-equals-this-update"
        ),
        pytest.param([], {"crl_number": -1}, "CRL number", id="fail/negative-crl-number"),
        pytest.param([], {"crl_number": 2**159}, "CRL number", id="fail/crl-number-over-20-octets"),
        pytest.param([RevokedEntry(0, NOW)], {}, "positive", id="fail/serial-zero"),
        pytest.param([RevokedEntry(-5, NOW)], {}, "positive", id="fail/serial-negative"),
        pytest.param([RevokedEntry(2**159, NOW)], {}, "20 octets", id="fail/serial-over-20-octets"),
        pytest.param(
            [RevokedEntry(5, NOW), RevokedEntry(5, NOW)], {}, "twice", id="fail/duplicate-serial"
        ),
        pytest.param(
            [RevokedEntry(5, NOW, x509.ReasonFlags.remove_from_crl)],
            {},
            "delta",
            id="fail/remove-from-crl",
        ),
        pytest.param(
            [RevokedEntry(5, datetime(1949, 12, 31, tzinfo=UTC))], {}, "1950", id="fail/before-1950"
        ),
    ],
)
def test_bad_crl_input_is_refused(
    test_ca: TestCA, entries: list[RevokedEntry], options: dict[str, object], message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        crl_of(test_ca, entries, **options)


def test_crl_signed_by_another_key_is_refused(test_ca: TestCA) -> None:
    other = make_test_ca()
    with pytest.raises(BadRequest, match="does not belong"):
        build_crl(
            test_ca.intermediate,
            other.intermediate_key,
            [],
            crl_number=1,
            this_update=NOW,
            next_update=NOW + DAY,
        )


def test_crl_issuer_without_crl_sign_is_refused(test_ca: TestCA) -> None:
    leaf, key = test_ca.issue()
    with pytest.raises(BadRequest, match="cRLSign"):
        build_crl(leaf, key, [], crl_number=1, this_update=NOW, next_update=NOW + DAY)


@pytest.mark.parametrize(
    ("now", "current"),
    [
        pytest.param(NOW - timedelta(seconds=1), False, id="fail/before-this-update"),
        pytest.param(NOW, True, id="ok/at-this-update"),
        pytest.param(NOW + DAY - timedelta(seconds=1), True, id="ok/before-next-update"),
        pytest.param(NOW + DAY, False, id="fail/at-next-update"),
    ],
)
def test_crl_is_current_between_this_and_next_update(
    test_ca: TestCA, now: datetime, current: bool
) -> None:
    assert crl_is_current(x509.load_der_x509_crl(crl_of(test_ca, [])), now) is current


# ------------------------------------------------------------------ independent checkers


@pytest.mark.parametrize(
    "entries",
    [
        pytest.param([], id="empty"),
        pytest.param(
            [
                RevokedEntry(0x1234, NOW - DAY, x509.ReasonFlags.key_compromise),
                RevokedEntry(0x5678, NOW - DAY, None),
                RevokedEntry(
                    2**158 + 1, datetime(2051, 1, 1, tzinfo=UTC), x509.ReasonFlags.superseded
                ),
            ],
            id="with-entries",
        ),
    ],
)
def test_pkilint_finds_no_error_in_crl(test_ca: TestCA, entries: list[RevokedEntry]) -> None:
    assert lint_crl(crl_of(test_ca, entries)) == []


def _pem(crl_der: bytes) -> bytes:
    return x509.load_der_x509_crl(crl_der).public_bytes(Encoding.PEM)


def _write_chain(ca: TestCA, folder: Path) -> Path:
    chain = folder / "chain.pem"
    chain.write_bytes(
        ca.intermediate.public_bytes(Encoding.PEM) + ca.root.public_bytes(Encoding.PEM)
    )
    return chain


def _openssl_crl_verdict(trusted: TestCA, crl_der: bytes, folder: Path) -> str:
    """``openssl crl -verify``'s verdict line; it exits 0 either way (OpenSSL 3.0)."""
    openssl = require_tool("openssl")
    crl_file = folder / "crl.der"
    crl_file.write_bytes(crl_der)
    result = subprocess.run(
        [openssl, "crl", "-inform", "DER", "-in", crl_file, "-noout",
         "-CAfile", _write_chain(trusted, folder)],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return (result.stdout + result.stderr).strip()


@pytest.mark.interop
def test_openssl_verifies_crl_signature(test_ca: TestCA, tmp_path: Path) -> None:
    der = crl_of(test_ca, [RevokedEntry(5, NOW, x509.ReasonFlags.superseded)])
    assert _openssl_crl_verdict(test_ca, der, tmp_path) == "verify OK"


@pytest.mark.interop
def test_openssl_rejects_crl_from_another_ca(test_ca: TestCA, tmp_path: Path) -> None:
    der = crl_of(make_test_ca(), [])
    assert _openssl_crl_verdict(test_ca, der, tmp_path) == "verify failure"


@pytest.mark.interop
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(entries=_entries)
def test_openssl_verifies_random_crls(
    any_ca: TestCA, tmp_path_factory: pytest.TempPathFactory, entries: list[RevokedEntry]
) -> None:
    folder = tmp_path_factory.mktemp("crl")
    assert _openssl_crl_verdict(any_ca, crl_of(any_ca, entries), folder) == "verify OK"


@pytest.mark.interop
def test_openssl_verifies_hundred_thousand_entry_crl(test_ca: TestCA, tmp_path: Path) -> None:
    entries = [
        RevokedEntry(i << 80 | 0x55, NOW, x509.ReasonFlags.superseded) for i in range(1, 100_001)
    ]
    assert _openssl_crl_verdict(test_ca, crl_of(test_ca, entries), tmp_path) == "verify OK"


@pytest.mark.interop
@pytest.mark.parametrize(
    ("revoke", "accepted"),
    [pytest.param(False, True, id="ok/not-listed"), pytest.param(True, False, id="fail/revoked")],
)
def test_openssl_crl_check_rejects_revoked_leaf(
    test_ca: TestCA, tmp_path: Path, revoke: bool, accepted: bool
) -> None:
    openssl = require_tool("openssl")
    leaf, _ = test_ca.issue("bob", ("bob@example.com",))
    listed = (
        [RevokedEntry(leaf.serial_number, NOW, x509.ReasonFlags.key_compromise)] if revoke else []
    )
    listed.append(RevokedEntry(leaf.serial_number + 1, NOW))
    (tmp_path / "crl.pem").write_bytes(_pem(crl_of(test_ca, listed)))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(Encoding.PEM))
    (tmp_path / "root.pem").write_bytes(test_ca.root.public_bytes(Encoding.PEM))
    (tmp_path / "intermediate.pem").write_bytes(test_ca.intermediate.public_bytes(Encoding.PEM))
    result = subprocess.run(
        [
            openssl,
            "verify",
            "-crl_check",
            "-attime",
            str(int(NOW.timestamp()) + 60),
            "-purpose",
            "sslclient",
            "-CAfile",
            tmp_path / "root.pem",
            "-untrusted",
            tmp_path / "intermediate.pem",
            "-CRLfile",
            tmp_path / "crl.pem",
            tmp_path / "leaf.pem",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    assert (result.returncode == 0) is accepted, output
    if not accepted:
        assert "certificate revoked" in output
