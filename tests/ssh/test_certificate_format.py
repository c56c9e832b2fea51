"""Our certificate blob against ``ssh-keygen -s`` with the same inputs, and ``ssh-keygen -L``."""

from __future__ import annotations

import base64
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_identity

from ostiary.core.errors import BadRequest, MalformedInput, WeakKey
from ostiary.core.keys import KeyType, generate_private_key
from ostiary.ssh import (
    SSHCertificateFields,
    SSHCertificateType,
    certificate_line,
    certificate_tbs,
    load_ssh_public_key_line,
    sign_certificate,
)
from ostiary.ssh.wire import read_string
from tests.conftest import require_tool

VALID_AFTER = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
VALID_BEFORE = datetime(2026, 12, 8, 0, 0, 30, tzinfo=UTC)
SUBJECTS = {
    "ed25519": ed25519.Ed25519PrivateKey.generate,
    "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "rsa": lambda: rsa.generate_private_key(65537, 2048),
}


def _openssh_private(key, path: Path) -> None:  # type: ignore[no-untyped-def]
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _pub(key) -> str:  # type: ignore[no-untyped-def]
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


def _keygen_certificate(tmp_path: Path, ca_key, subject_line: str, *, host: bool) -> bytes:  # type: ignore[no-untyped-def]
    keygen = require_tool("ssh-keygen")
    _openssh_private(ca_key, tmp_path / "ca")
    (tmp_path / "subject.pub").write_text(subject_line + "\n")
    args = [keygen, "-q", "-s", str(tmp_path / "ca"), "-I", "first.last@corp"]
    args += ["-n", "first.last,root,web-01.corp.example", "-z", "1234567890123"]
    args += ["-V", "20261207120000:20261208000030"]
    if host:
        args += ["-h"]
    else:
        args += ["-O", "clear", "-O", "permit-pty", "-O", "permit-X11-forwarding"]
        args += ["-O", "source-address=127.0.0.1/32,10.0.0.0/8"]
        args += ["-O", "force-command=/usr/bin/true"]
    subprocess.run(
        [*args, str(tmp_path / "subject.pub")],
        check=True,
        env={**os.environ, "TZ": "UTC"},
        capture_output=True,
    )
    line = (tmp_path / "subject-cert.pub").read_text().split()
    return base64.b64decode(line[1])


def _without_signature(blob: bytes, signed_length: int) -> bytes:
    """``blob`` up to ``signed_length``, checking that exactly one string (the signature)
    follows it."""
    _, end = read_string(blob, signed_length)
    assert end == len(blob)
    return blob[:signed_length]


@pytest.mark.parametrize("ca_type", ["ed25519", "p256", "p384", "rsa3072"])
@pytest.mark.parametrize("subject_type", sorted(SUBJECTS))
def test_user_certificate_equals_ssh_keygen_apart_from_the_signature(
    tmp_path: Path, ca_type: str, subject_type: str
) -> None:
    ca_key = generate_private_key(KeyType(ca_type))
    subject = load_ssh_public_key_line(_pub(SUBJECTS[subject_type]()))
    theirs = _keygen_certificate(tmp_path, ca_key, subject.line(), host=False)
    nonce = load_ssh_public_identity(certificate_line(theirs).encode()).nonce
    fields = SSHCertificateFields(
        public_key=subject,
        serial=1234567890123,
        cert_type=SSHCertificateType.USER,
        key_id="first.last@corp",
        principals=("first.last", "root", "web-01.corp.example"),
        valid_after=VALID_AFTER,
        valid_before=VALID_BEFORE,
        critical_options={
            "source-address": "127.0.0.1/32,10.0.0.0/8",
            "force-command": "/usr/bin/true",
        },
        extensions=("permit-pty", "permit-X11-forwarding"),
        nonce=nonce,
    )
    tbs = certificate_tbs(fields, ca_key.public_key())
    ours = sign_certificate(fields, ca_key)
    assert tbs == _without_signature(theirs, len(tbs))
    assert _without_signature(ours, len(tbs)) == tbs
    parsed = load_ssh_public_identity(certificate_line(ours).encode())
    parsed.verify_cert_signature()  # cryptography checks our signature independently
    assert parsed.valid_principals == [b"first.last", b"root", b"web-01.corp.example"]


def test_host_certificate_equals_ssh_keygen(tmp_path: Path) -> None:
    ca_key = generate_private_key(KeyType.ED25519)
    subject = load_ssh_public_key_line(_pub(SUBJECTS["p256"]()))
    theirs = _keygen_certificate(tmp_path, ca_key, subject.line(), host=True)
    nonce = load_ssh_public_identity(certificate_line(theirs).encode()).nonce
    fields = SSHCertificateFields(
        public_key=subject,
        serial=1234567890123,
        cert_type=SSHCertificateType.HOST,
        key_id="first.last@corp",
        principals=("first.last", "root", "web-01.corp.example"),
        valid_after=VALID_AFTER,
        valid_before=VALID_BEFORE,
        nonce=nonce,
    )
    tbs = certificate_tbs(fields, ca_key.public_key())
    assert _without_signature(theirs, len(tbs)) == tbs
    assert _without_signature(sign_certificate(fields, ca_key), len(tbs)) == tbs


def test_ssh_keygen_lists_the_fields_we_set(tmp_path: Path) -> None:
    keygen = require_tool("ssh-keygen")
    ca_key = generate_private_key(KeyType.RSA3072)
    fields = SSHCertificateFields(
        public_key=load_ssh_public_key_line(_pub(SUBJECTS["ed25519"]())),
        serial=42,
        cert_type=SSHCertificateType.USER,
        key_id="alice.smith",
        principals=("alice.smith",),
        valid_after=VALID_AFTER,
        valid_before=VALID_BEFORE,
        critical_options={"source-address": "192.0.2.0/24"},
        extensions=("permit-agent-forwarding",),
    )
    (tmp_path / "c-cert.pub").write_text(certificate_line(sign_certificate(fields, ca_key)) + "\n")
    listing = subprocess.run(
        [keygen, "-L", "-f", str(tmp_path / "c-cert.pub")],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "TZ": "UTC"},
    ).stdout
    assert "Type: ssh-ed25519-cert-v01@openssh.com user certificate" in listing
    assert "Signing CA: RSA SHA256:" in listing and "(using rsa-sha2-512)" in listing
    assert 'Key ID: "alice.smith"' in listing
    assert "Serial: 42" in listing
    assert "Valid: from 2026-12-07T12:00:00 to 2026-12-08T00:00:30" in listing
    assert "Principals: \n                alice.smith" in listing
    assert "source-address 192.0.2.0/24" in listing
    assert "permit-agent-forwarding" in listing and "permit-pty" not in listing


@pytest.mark.parametrize(
    ("line", "error"),
    [
        pytest.param("ssh-ed25519", MalformedInput, id="fail/no-data"),
        pytest.param("ssh-ed25519 !!!notbase64", MalformedInput, id="fail/not-base64"),
        pytest.param("ssh-dss AAAAB3NzaC1kc3MAAACBAP", BadRequest, id="fail/dsa"),
        pytest.param(
            "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29t",
            BadRequest,
            id="fail/fido",
        ),
        pytest.param("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA==", MalformedInput, id="fail/short"),
    ],
)
def test_malformed_or_refused_public_keys(line: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        load_ssh_public_key_line(line)


def test_mismatched_type_name_is_refused() -> None:
    ed = _pub(SUBJECTS["ed25519"]()).split()[1]
    with pytest.raises(MalformedInput):
        load_ssh_public_key_line(f"ssh-rsa {ed}")


def test_weak_rsa_is_refused() -> None:
    weak = rsa.generate_private_key(65537, 1024)
    with pytest.raises(WeakKey):
        load_ssh_public_key_line(_pub(weak))
