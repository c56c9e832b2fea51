"""An SSH key held in a TPM through tpm2-pkcs11 (swtpm behind tpm2-abrmd, as tests/tpm
sets up): ``ostiary ssh login --key-store tpm`` gets the certificate for the token's key,
ssh logs in with ``PKCS11Provider`` and the right PIN, and not with a wrong one.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ostiary.cli.ssh_login import TPM2_PKCS11
from tests.client.conftest import ok
from tests.conftest import IN_CI, require_tool
from tests.ssh.conftest import SSHCA
from tests.ssh.sshd import LOGIN_USER, Sshd, keygen, new_key
from tests.tpm.conftest import BrokeredTPM, brokered_tpm, manufacturer  # noqa: F401 (fixtures)

PIN = "246810"


def _ptool(*args: str, env: dict[str, str]) -> None:
    result = subprocess.run(
        [require_tool("tpm2_ptool"), *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _ssh(
    sshd: Sshd, certificate: Path, askpass: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    options = ["-F", "/dev/null", "-p", str(sshd.port), "-o", f"PKCS11Provider={TPM2_PKCS11}",
               "-i", str(certificate).replace("-cert.pub", ".pub"),
               "-o", f"CertificateFile={certificate}", "-o", "IdentitiesOnly=yes",
               "-o", "IdentityAgent=none", "-o", "StrictHostKeyChecking=no",
               "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=30",
               "-o", "PasswordAuthentication=no",
               "-o", "KbdInteractiveAuthentication=no"]  # fmt: skip
    env = {**env, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"}
    env.pop("SSH_AUTH_SOCK", None)
    result = subprocess.run(
        [require_tool("ssh"), *options, f"{LOGIN_USER}@127.0.0.1", "true"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    return result


# About 30 s: a TPM token is initialised and its key made (tpm2_ptool), and ssh signs in the TPM.
def test_tpm_held_key_gets_a_certificate_and_logs_in_with_its_pin_only(
    tmp_path: Path,
    ssh_ca: SSHCA,
    brokered_tpm: BrokeredTPM,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not Path(TPM2_PKCS11).is_file():
        message = "tpm2-pkcs11 is not installed (libtpm2-pkcs11-1)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    store = tmp_path / "tpm2-pkcs11"
    store.mkdir()
    monkeypatch.setenv("TPM2_PKCS11_STORE", str(store))
    monkeypatch.setenv("TPM2_PKCS11_TCTI", brokered_tpm.tcti)
    monkeypatch.setenv("TPM2TOOLS_TCTI", brokered_tpm.tcti)
    env = dict(os.environ)
    _ptool("init", f"--path={store}", env=env)
    _ptool("addtoken", "--pid=1", "--label=ssh", "--sopin=so-pin-1357", f"--userpin={PIN}",
           f"--path={store}", env=env)  # fmt: skip
    _ptool("addkey", "--algorithm=ecc256", "--label=ssh", f"--userpin={PIN}",
           f"--path={store}", env=env)  # fmt: skip
    out = tmp_path / "id_tpm"
    token = ssh_ca.token("first.last")
    printed = ok("ssh", "login", "--key-store", "tpm", "--token", token, "--out", out,
                 *ssh_ca.client_args()).stdout  # fmt: skip
    assert f"PKCS11Provider={TPM2_PKCS11}" in printed
    assert not out.exists()  # the private key stays in the TPM
    certificate = tmp_path / "id_tpm-cert.pub"
    assert "ecdsa-sha2-nistp256-cert-v01@openssh.com" in keygen("-L", "-f", certificate)
    listed = subprocess.run(
        [require_tool("ssh-keygen"), "-D", TPM2_PKCS11], capture_output=True, text=True, env=env
    ).stdout
    assert (tmp_path / "id_tpm.pub").read_text().split()[1] in listed
    (tmp_path / "principals").mkdir()
    (tmp_path / "principals" / LOGIN_USER).write_text("first.last\n")
    host_key = tmp_path / "host_key"
    new_key(host_key)
    sshd = Sshd(
        tmp_path,
        [
            f"TrustedUserCAKeys {ssh_ca.user_ca}",
            f"AuthorizedPrincipalsFile {tmp_path}/principals/%u",
        ],
        host_key,
    )
    sshd.start()
    try:
        right, wrong = tmp_path / "right-pin", tmp_path / "wrong-pin"
        right.write_text(f"#!/bin/sh\necho {PIN}\n")
        wrong.write_text("#!/bin/sh\necho 999999\n")
        right.chmod(0o700)
        wrong.chmod(0o700)
        refused = _ssh(sshd, certificate, wrong, env)
        assert refused.returncode == 255, refused.stderr
        assert "PIN incorrect" in refused.stderr  # the TPM refused to unseal the key
        logged_in = _ssh(sshd, certificate, right, env)
        assert logged_in.returncode == 0, logged_in.stderr + sshd.log()
        assert "ID first.last" in sshd.log()
    finally:
        sshd.stop()
