"""The operator's certificate list and detail, behind an admin token."""

from __future__ import annotations

from cryptography import x509

from tests.server.conftest import Running


def test_admins_list_search_and_page_certificates(running: Running) -> None:
    alice = running.enroll("alice@example.com", ["alice@example.com"])
    bob = running.enroll("bob@example.com", ["bob@example.com"])
    headers = {"authorization": f"Bearer {running.admin_token()}"}
    with running.client() as client:
        everything = client.get("/certificates", headers=headers).json()
        by_name = client.get("/certificates", params={"q": "bob@"}, headers=headers).json()
        client.post(
            "/revoke",
            json={"serial_number": f"{alice.certificate.serial_number:x}"},
            headers=headers,
        )
        revoked = client.get("/certificates", params={"status": "revoked"}, headers=headers)
        first = client.get("/certificates", params={"limit": 1}, headers=headers).json()
        second = client.get(
            "/certificates", params={"limit": 1, "offset": first["next_offset"]}, headers=headers
        ).json()
    serials = [c["serial_number"] for c in everything["certificates"]]
    # The server's own TLS and OCSP responder certificates are recorded like any other.
    profiles = sorted(c["profile"] for c in everything["certificates"])
    assert profiles == ["client", "client", "ocsp", "server"]
    assert serials[0] == f"{bob.certificate.serial_number:x}", "newest first"
    assert everything["next_offset"] is None
    assert [c["subject"] for c in by_name["certificates"]] == ["CN=bob@example.com"]
    assert [c["serial_number"] for c in revoked.json()["certificates"]] == [
        f"{alice.certificate.serial_number:x}"
    ]
    assert revoked.json()["certificates"][0]["revocation_reason"] == "unspecified"
    assert first["next_offset"] == 1
    assert second["certificates"][0]["serial_number"] == serials[1]


def test_admins_see_one_certificate_with_its_pem(running: Running) -> None:
    alice = running.enroll("alice@example.com", ["alice@example.com"])
    serial = f"{alice.certificate.serial_number:x}"
    headers = {"authorization": f"Bearer {running.admin_token()}"}
    with running.client() as client:
        colons = ":".join(serial[i : i + 2] for i in range(0, len(serial), 2))
        detail = client.get(f"/certificates/{serial}", headers=headers).json()
        same = client.get(f"/certificates/{colons}", headers=headers).json()
    assert detail == same
    assert detail["sans"] == ["email:alice@example.com"]
    assert detail["status"] == "valid"
    assert detail["provisioner"] == "ops"
    assert x509.load_pem_x509_certificate(detail["certificate"].encode()) == alice.certificate


def test_holders_are_not_admins(running: Running) -> None:
    alice = running.enroll()
    with running.client(identity=alice) as client:
        answer = client.get("/certificates")
    assert answer.status_code == 401
