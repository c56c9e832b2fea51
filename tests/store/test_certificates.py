"""Recording, finding, searching and revoking certificates."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ObjectIdentifier
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ostiary.core.errors import AlreadyRevoked, BadRequest, Conflict, MalformedInput, NotFound
from ostiary.core.names import format_general_name
from ostiary.store import (
    CertificateRepository,
    CertificateStatus,
    RevocationStatus,
    Store,
    migrate,
    sqlite_url_for,
)

UPN = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")


def _add(store, certificate, profile="device", provisioner="otp", now=None):
    with store.transaction() as session:
        return CertificateRepository(session).add(
            certificate, profile=profile, provisioner=provisioner, now=now
        )


def test_added_certificate_reads_back_with_every_field(store, ca, now):
    certificate = ca.issue(
        serial=0x0123456789ABCDEF0123456789ABCDEF01234567,
        names=[x509.DNSName("door.example.com"), x509.IPAddress(ipaddress.ip_address("10.0.0.1"))],
    )
    _add(store, certificate, now=now)

    with store.transaction(read_only=True) as session:
        record = CertificateRepository(session).get(certificate.serial_number, ca.key_id)

    assert record.serial == "123456789abcdef0123456789abcdef01234567"
    assert record.serial_number == certificate.serial_number
    assert record.issuer_key_id == ca.key_id
    assert record.subject == "CN=device-1"
    assert record.sans == ["dns:door.example.com", "ip:10.0.0.1"]
    assert record.not_before == certificate.not_valid_before_utc
    assert record.not_after == certificate.not_valid_after_utc
    assert record.not_after.tzinfo is UTC
    assert record.created_at == now
    assert (record.profile, record.provisioner) == ("device", "otp")
    assert record.status == CertificateStatus.VALID
    assert record.revoked_at is None
    assert record.revocation_reason is None
    assert record.certificate() == certificate
    assert record.fingerprint_sha256 == certificate.fingerprint(hashes.SHA256()).hex()


def test_certificate_is_found_by_fingerprint_in_any_spelling(store, ca):
    certificate = ca.issue()
    _add(store, certificate)
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
    spelled = ":".join(fingerprint[i : i + 2] for i in range(0, 64, 2)).upper()
    with store.transaction(read_only=True) as session:
        assert CertificateRepository(session).by_fingerprint(spelled).certificate() == certificate
        with pytest.raises(NotFound):
            CertificateRepository(session).by_fingerprint("00" * 32)


def test_serial_is_unique_per_issuer(store, ca, other_ca):
    _add(store, ca.issue(serial=4242))
    with pytest.raises(Conflict, match="already recorded"):
        _add(store, ca.issue(serial=4242, common_name="device-2"))
    _add(store, other_ca.issue(serial=4242))  # another issuer may use the same serial

    with store.transaction(read_only=True) as session:
        certificates = CertificateRepository(session)
        assert certificates.get(4242, ca.key_id).subject == "CN=device-1"
        assert certificates.get(4242, other_ca.key_id).issuer_key_id == other_ca.key_id
        with pytest.raises(Conflict, match="more than one CA"):
            certificates.get(4242)


def test_a_refused_duplicate_leaves_the_transaction_usable(store, ca):
    first = ca.issue(serial=7)
    with store.transaction() as session:
        certificates = CertificateRepository(session)
        certificates.add(first, profile="device", provisioner=None)
        with pytest.raises(Conflict):
            certificates.add(ca.issue(serial=7), profile="device", provisioner=None)
        certificates.add(ca.issue(serial=8), profile="device", provisioner=None)
    with store.transaction(read_only=True) as session:
        assert CertificateRepository(session).count_by_status()[CertificateStatus.VALID] == 2


def test_unknown_serial_is_not_found(store, ca):
    with store.transaction(read_only=True) as session, pytest.raises(NotFound):
        CertificateRepository(session).get(1, ca.key_id)


def test_certificate_without_authority_key_identifier_is_refused(store, ca):
    with pytest.raises(MalformedInput, match="authority key identifier"):
        _add(store, ca.issue(authority_key_id=False))


def test_search_matches_subject_sans_serial_and_filters(store, ca):
    alice = ca.issue(
        serial=0xA11CE, common_name="Alice Laptop", names=[x509.RFC822Name("alice@corp.example")]
    )
    bob = ca.issue(serial=0xB0B, common_name="bob-phone", names=[x509.DNSName("bob.example")])
    door = ca.issue(serial=0xD00, common_name="door_100%", names=[])
    for certificate, profile in [(alice, "user"), (bob, "device"), (door, "device")]:
        _add(store, certificate, profile=profile)
    with store.transaction() as session:
        CertificateRepository(session).revoke(
            0xB0B, reason="keyCompromise", at=datetime(2025, 3, 2, tzinfo=UTC)
        )

    def serials(**query):
        with store.transaction(read_only=True) as session:
            return [r.serial for r in CertificateRepository(session).search(**query)]

    assert serials(text="alice laptop") == ["a11ce"]
    assert serials(text="ALICE@corp") == ["a11ce"]
    assert serials(text="0x0B:0B") == ["b0b"]
    assert serials(text="100%") == ["d00"]
    assert serials(text="_") == ["d00"]  # wildcards in the text are literal
    assert sorted(serials(profile="device")) == ["b0b", "d00"]
    assert serials(status=CertificateStatus.REVOKED) == ["b0b"]
    assert serials(text="nobody") == []
    assert len(serials(limit=2)) == 2
    assert len(serials(limit=2, offset=2)) == 1


def test_expiring_lists_valid_certificates_soonest_first(store, ca, now):
    soon = ca.issue(serial=1, lifetime=timedelta(days=2))
    later = ca.issue(serial=2, lifetime=timedelta(days=5))
    far = ca.issue(serial=3, lifetime=timedelta(days=90))
    expired = ca.issue(serial=4, not_before=now - timedelta(days=10), lifetime=timedelta(days=1))
    revoked = ca.issue(serial=5, lifetime=timedelta(days=1))
    for certificate in [far, later, soon, expired, revoked]:
        _add(store, certificate)
    with store.transaction() as session:
        CertificateRepository(session).revoke(5, reason="superseded", at=now)

    with store.transaction(read_only=True) as session:
        certificates = CertificateRepository(session)
        assert [r.serial for r in certificates.expiring(before=now + timedelta(days=7))] == [
            "4",
            "1",
            "2",
        ]
        assert [
            r.serial for r in certificates.expiring(before=now + timedelta(days=7), after=now)
        ] == ["1", "2"]


def test_revoked_certificate_cannot_be_revoked_again(store, ca, now):
    _add(store, ca.issue(serial=99))
    with store.transaction() as session:
        record = CertificateRepository(session).revoke(
            99, reason="keyCompromise", at=now, issuer_key_id=ca.key_id
        )
    assert (record.status, record.revoked_at, record.revocation_reason) == (
        CertificateStatus.REVOKED,
        now,
        "keyCompromise",
    )

    with pytest.raises(AlreadyRevoked), store.transaction() as session:
        CertificateRepository(session).revoke(99, reason="superseded", at=now + timedelta(hours=1))

    with store.transaction(read_only=True) as session:
        record = CertificateRepository(session).get(99)
    assert (record.revoked_at, record.revocation_reason) == (now, "keyCompromise")


@pytest.mark.parametrize(
    ("serial", "reason", "error"),
    [
        pytest.param(12345, "keyCompromise", NotFound, id="fail/unknown-serial"),
        pytest.param(1, "stolen", BadRequest, id="fail/unknown-reason"),
        pytest.param(1, "removeFromCRL", BadRequest, id="fail/delta-crl-only-reason"),
    ],
)
def test_revocation_is_refused(store, ca, now, serial, reason, error):
    _add(store, ca.issue(serial=1))
    with pytest.raises(error), store.transaction() as session:
        CertificateRepository(session).revoke(serial, reason=reason, at=now)


def test_revoked_entries_stream_the_issuers_revocations(store, ca, other_ca, now):
    with store.transaction() as session:
        certificates = CertificateRepository(session)
        for serial in range(1, 11):
            certificates.add(ca.issue(serial=serial), profile="device", provisioner=None)
        certificates.add(other_ca.issue(serial=2), profile="device", provisioner=None)
        old = ca.issue(serial=11, not_before=now - timedelta(days=60))
        certificates.add(old, profile="device", provisioner=None)
    with store.transaction() as session:
        certificates = CertificateRepository(session)
        for serial in (2, 4, 11):
            certificates.revoke(serial, reason="superseded", at=now, issuer_key_id=ca.key_id)
        certificates.revoke(2, reason="keyCompromise", at=now, issuer_key_id=other_ca.key_id)

    with store.transaction(read_only=True) as session:
        certificates = CertificateRepository(session)
        entries = sorted(certificates.revoked_entries(ca.key_id))
        unexpired = sorted(certificates.revoked_entries(ca.key_id, unexpired_at=now))
    assert entries == [(2, now, "superseded"), (4, now, "superseded"), (11, now, "superseded")]
    assert unexpired == entries[:2]


def test_status_of_answers_good_revoked_and_unknown(store, ca, now):
    good, bad = ca.issue(serial=1), ca.issue(serial=2)
    _add(store, good)
    _add(store, bad)
    with store.transaction() as session:
        CertificateRepository(session).revoke(2, reason="cessationOfOperation", at=now)
    with store.transaction(read_only=True) as session:
        certificates = CertificateRepository(session)
        assert certificates.status_of(1, ca.key_id) == RevocationStatus(
            CertificateStatus.VALID, good.not_valid_after_utc, None, None
        )
        assert certificates.status_of(2, ca.key_id) == RevocationStatus(
            CertificateStatus.REVOKED, bad.not_valid_after_utc, now, "cessationOfOperation"
        )
        assert certificates.status_of(3, ca.key_id) is None
        assert certificates.status_of(1, "00" * 20) is None
        assert certificates.count_by_status() == {
            CertificateStatus.VALID: 1,
            CertificateStatus.REVOKED: 1,
        }


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param(x509.DNSName("a.example"), "dns:a.example", id="ok/dns"),
        pytest.param(x509.RFC822Name("a@b.example"), "email:a@b.example", id="ok/email"),
        pytest.param(x509.IPAddress(ipaddress.ip_address("::1")), "ip:::1", id="ok/ipv6"),
        pytest.param(
            x509.UniformResourceIdentifier("spiffe://corp/door"),
            "uri:spiffe://corp/door",
            id="ok/uri",
        ),
        pytest.param(
            x509.OtherName(UPN, b"\x0c\x0falice@corp.test"), "upn:alice@corp.test", id="ok/upn"
        ),
        pytest.param(
            x509.OtherName(UPN, b"\x04\x01x"),
            f"othername:{UPN.dotted_string}:040178",
            id="ok/bad-upn",
        ),
        pytest.param(
            x509.RegisteredID(ObjectIdentifier("1.2.3.4")), "rid:1.2.3.4", id="ok/registered-id"
        ),
    ],
)
def test_general_names_are_formatted_as_type_colon_value(name, expected):
    assert format_general_name(name) == expected


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory):
    store = Store.from_url(sqlite_url_for(tmp_path_factory.mktemp("db") / "property.db"))
    migrate(store.engine)
    yield store
    store.dispose()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(serial=st.integers(min_value=1, max_value=2**159 - 1))
def test_any_twenty_octet_serial_round_trips(sqlite_store, ca, serial):
    certificate = ca.issue(serial=serial)
    # A read-only transaction is never committed: each example starts from an empty table.
    with sqlite_store.transaction(read_only=True) as session:
        certificates = CertificateRepository(session)
        certificates.add(certificate, profile="device", provisioner=None)
        record = certificates.get(serial, ca.key_id)
        assert record.serial_number == serial
        assert record.serial == f"{serial:x}"
        assert certificates.status_of(serial, ca.key_id) is not None
