"""Backup and restore of a CA whose keys live in a PKCS#11 token (SoftHSM2).

The archive holds the folder and the database, never a key: the restored folder names the
same token and key labels, signs through the token, knows every certificate of the old one
and continues its serials (issue 18: "for a token CA, which token and key labels").
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from cryptography import x509

from ostiary.store import CertificateRecord, Store
from tests.hsm.conftest import SoftHSM
from tests.hsm.test_pkcs11_ca import init_token_ca, make_csr, no_private_key_on_disk, ok, openssl


def _serials(home: Path) -> set[int]:
    store = Store.from_url(f"sqlite:///{home / 'ostiary.db'}")
    try:
        with store.transaction(read_only=True) as session:
            return {int(r.serial, 16) for r in session.query(CertificateRecord)}
    finally:
        store.dispose()


def test_a_token_ca_restores_to_a_folder_that_signs_through_the_same_token(
    softhsm: SoftHSM, tmp_path: Path
) -> None:
    home = init_token_ca(softhsm, tmp_path, "cli-backup")
    pin_file = softhsm.pin_file(tmp_path)
    alice = tmp_path / "alice.crt"
    ok("ca", "sign", make_csr(tmp_path, "alice"), "--out", alice, "--dir", home,
       "--pin-file", pin_file)  # fmt: skip
    archive_password = tmp_path / "archive.password"
    archive_password.write_text("correct horse battery staple\n")
    archive = tmp_path / "ca.backup"
    ok("ca", "backup", "--out", archive, "--password-file", archive_password, "--dir", home)
    assert archive.stat().st_mode & 0o777 == 0o600
    restored = tmp_path / "restored"
    ok("ca", "restore", archive, "--dir", restored, "--password-file", archive_password)

    # No key in the restored folder; the same token and labels named.
    no_private_key_on_disk(restored)
    before = tomllib.loads((home / "ostiary.toml").read_text())
    after = tomllib.loads((restored / "ostiary.toml").read_text())
    assert after["kms"] == "pkcs11" and after["pkcs11"] == before["pkcs11"]
    assert _serials(restored) == _serials(home)

    # It signs through the token: a new serial, under the same root.
    bob = tmp_path / "bob.crt"
    ok("ca", "sign", make_csr(tmp_path, "bob"), "--out", bob, "--dir", restored,
       "--pin-file", pin_file)  # fmt: skip
    bob_serial = x509.load_pem_x509_certificate(bob.read_bytes()).serial_number
    assert bob_serial not in _serials(home)
    root, intermediate = restored / "certs" / "root.crt", restored / "certs" / "intermediate.crt"
    assert (home / "certs" / "root.crt").read_bytes() == root.read_bytes()
    assert ": OK" in openssl(
        "verify", "-check_ss_sig", "-CAfile", root, "-untrusted", intermediate, bob
    )  # fmt: skip
    # and it knows the old CA's certificates: alice is revoked in the restored CA
    alice_serial = x509.load_pem_x509_certificate(alice.read_bytes()).serial_number
    ok("ca", "revoke", format(alice_serial, "x"), "--reason", "keyCompromise",
       "--dir", restored, "--pin-file", pin_file)  # fmt: skip
