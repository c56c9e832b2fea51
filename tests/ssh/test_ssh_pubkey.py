"""``ostiary cert ssh-pubkey CRT`` against ``ssh-keygen -i -m PKCS8``, byte for byte."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from ostiary.core.keys import KeyType, generate_private_key
from tests.client.conftest import ok, refused
from tests.conftest import TestCA, require_tool


# ssh-keygen 9.2 reads no Ed25519 PKCS#8 key, so Ed25519 has nothing to compare against.
@pytest.mark.parametrize("key_type", [KeyType.P256, KeyType.P384, KeyType.RSA2048])
def test_line_equals_ssh_keygen(tmp_path: Path, test_ca: TestCA, key_type: KeyType) -> None:
    key = generate_private_key(key_type)
    certificate, _ = test_ca.issue("alice", key=key)
    crt = tmp_path / "alice.crt"
    crt.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    pem = tmp_path / "alice.pub.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    theirs = subprocess.run(
        [require_tool("ssh-keygen"), "-i", "-m", "PKCS8", "-f", str(pem)],
        capture_output=True,
        check=True,
    ).stdout
    assert ok("cert", "ssh-pubkey", crt).stdout.encode() == theirs


def test_not_a_certificate_is_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.crt").write_text("hello")
    refused("cert", "ssh-pubkey", tmp_path / "junk.crt")
