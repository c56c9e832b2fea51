"""SSH CA keys in the CA's PKCS#11 token (SoftHSM2): made there, signing there."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_ssh_public_identity

from ostiary.authority.folder import CAPaths
from ostiary.authority.ssh import SSHAuthority, SSHAuthorization
from ostiary.authority.ssh_keys import load_ssh_ca
from ostiary.authority.token_ca import load_token_ca_folder
from ostiary.signers.pkcs11 import Pkcs11Signer
from ostiary.ssh import SSHCertificateType, load_ssh_public_key_line
from ostiary.store import Store, sqlite_url_for
from tests.conftest import require_tool
from tests.hsm.conftest import PIN, SoftHSM
from tests.hsm.test_pkcs11_ca import init_token_ca, ok, refused


def test_ssh_ca_keys_live_in_the_token_and_sign_certificates(
    softhsm: SoftHSM, tmp_path: Path
) -> None:
    home = init_token_ca(softhsm, tmp_path, "ssh-ca")
    pin_file = softhsm.pin_file(tmp_path)
    assert "cannot be made in a token" in refused(
        "ca", "ssh", "init", "--dir", home, "--pin-file", pin_file
    )  # Ed25519, the default, is no token key type
    ok("ca", "ssh", "init", "--key-type", "p256", "--dir", home, "--pin-file", pin_file)
    assert not list(home.glob("secrets/ssh_*"))  # no key files: the keys are in the token
    material = load_token_ca_folder(CAPaths(home), PIN.encode())
    store = Store.from_url(sqlite_url_for(home / "ostiary.db"))
    try:
        keys = load_ssh_ca(material, b"unused for a token")
        assert keys is not None
        assert isinstance(keys.user, Pkcs11Signer) and isinstance(keys.host, Pkcs11Signer)
        assert keys.user.public_key() != keys.host.public_key()
        key_file = tmp_path / "id"
        subprocess.run(
            [require_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", key_file],
            check=True,
        )
        issued = SSHAuthority(keys, store, clock=lambda: datetime.now(UTC)).issue(
            load_ssh_public_key_line(key_file.with_suffix(".pub").read_text()),
            SSHAuthorization(
                SSHCertificateType.USER, ("first.last",), "first.last", timedelta(hours=1), "t"
            ),
            actor="test",
        )
    finally:
        store.dispose()
        material.signer.close()
    certificate = load_ssh_public_identity(issued.line.encode())
    certificate.verify_cert_signature()
    (tmp_path / "id-cert.pub").write_text(issued.line + "\n")
    listing = subprocess.run(
        [require_tool("ssh-keygen"), "-L", "-f", tmp_path / "id-cert.pub"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    fingerprint = subprocess.run(
        [require_tool("ssh-keygen"), "-l", "-f", home / "certs" / "ssh_user_ca.pub"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[1]
    assert f"Signing CA: ECDSA {fingerprint} (using ecdsa-sha2-nistp256)" in listing
