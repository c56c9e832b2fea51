"""The CA and every leaf profile, checked by independent tools: pkilint and openssl verify."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..conftest import NOW, TestCA, require_tool
from ..pkilint_helper import lint_certificate

#: (profile, SANs) for a leaf of each profile. The device URI is https: pkilint's URI check
#: (the ``validators`` package) flags ``urn:`` and ``spiffe:`` URIs, valid as they are.
LEAVES = [
    pytest.param("client", ("alice@example.com",), id="client"),
    pytest.param("user", ("upn:alice@corp.example.com", "alice@example.com"), id="user-upn"),
    pytest.param("server", ("www.example.com", "10.0.0.1"), id="server-dns"),
    pytest.param("device", ("uri:https://devices.example.com/1234",), id="device-uri"),
    pytest.param("ocsp", (), id="ocsp"),
]


@pytest.mark.parametrize("which", ["root", "intermediate"])
def test_pkilint_finds_no_error_in_ca_certificates(test_ca: TestCA, which: str) -> None:
    certificate: x509.Certificate = getattr(test_ca, which)
    assert lint_certificate(certificate.public_bytes(Encoding.DER)) == []


@pytest.mark.parametrize(("profile", "sans"), LEAVES)
def test_pkilint_finds_no_error_in_leaf(
    test_ca: TestCA, profile: str, sans: tuple[str, ...]
) -> None:
    leaf, _ = test_ca.issue("alice", sans, profile=profile)
    assert lint_certificate(leaf.public_bytes(Encoding.DER)) == []


def _openssl_verify(ca: TestCA, leaf: x509.Certificate, purpose: str, folder: Path) -> str:
    openssl = require_tool("openssl")
    (folder / "root.pem").write_bytes(ca.root.public_bytes(Encoding.PEM))
    (folder / "intermediate.pem").write_bytes(ca.intermediate.public_bytes(Encoding.PEM))
    (folder / "leaf.pem").write_bytes(leaf.public_bytes(Encoding.PEM))
    result = subprocess.run(
        [
            openssl,
            "verify",
            "-attime",
            str(int((NOW + timedelta(minutes=5)).timestamp())),
            "-purpose",
            purpose,
            "-CAfile",
            folder / "root.pem",
            "-untrusted",
            folder / "intermediate.pem",
            folder / "leaf.pem",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return f"{result.returncode}\n{result.stdout}{result.stderr}"


@pytest.mark.interop
@pytest.mark.parametrize(
    ("profile", "sans", "purpose", "accepted"),
    [
        pytest.param("client", ("alice@example.com",), "sslclient", True, id="ok/client-as-client"),
        pytest.param(
            "user", ("upn:alice@corp.example.com",), "sslclient", True, id="ok/user-as-client"
        ),
        pytest.param(
            "device", ("uri:https://devices.example.com/1",), "sslclient", True, id="ok/device"
        ),
        pytest.param("server", ("www.example.com",), "sslserver", True, id="ok/server-as-server"),
        pytest.param(
            "client", ("alice@example.com",), "sslserver", False, id="fail/client-as-server"
        ),
        pytest.param(
            "server", ("www.example.com",), "sslclient", False, id="fail/server-as-client"
        ),
    ],
)
def test_openssl_verifies_issued_chain_for_its_purpose(
    test_ca: TestCA,
    tmp_path: Path,
    profile: str,
    sans: tuple[str, ...],
    purpose: str,
    accepted: bool,
) -> None:
    leaf, _ = test_ca.issue("alice", sans, profile=profile)
    output = _openssl_verify(test_ca, leaf, purpose, tmp_path)
    assert output.startswith("0\n") is accepted, output
    assert ("leaf.pem: OK" in output) is accepted, output
