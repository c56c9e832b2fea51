"""``ostiary cert request SUBJECT CRT --csr FILE``: a CSR made by openssl with a key kept in
another folder (as certreq keeps it in the TPM, XCA in its database) gets a certificate
through a token and through an officer's approval; only the certificate comes back."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.client.conftest import ok, refused
from tests.conftest import make_test_ca, require_tool
from tests.console.conftest import Console


def openssl_csr(folder: Path, common_name: str, *, der: bool = False) -> tuple[Path, Path]:
    """A key (in ``folder/elsewhere``, never given to ostiary) and its CSR, by openssl."""
    openssl = require_tool("openssl")
    elsewhere = folder / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    key, csr = elsewhere / f"{common_name}.key", folder / f"{common_name}.csr"
    subprocess.run(
        [
            openssl,
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            key,
            "-subj",
            f"/CN={common_name}",
            "-out",
            csr,
            "-outform",
            "DER" if der else "PEM",
        ],
        check=True,
        capture_output=True,
    )
    return key, csr


def issued_for(crt: Path, key: Path) -> x509.Certificate:
    chain = crt.read_bytes()
    certificate = x509.load_pem_x509_certificate(chain)
    public_key = serialization.load_pem_private_key(key.read_bytes(), None).public_key()
    assert certificate.public_key() == public_key
    return certificate


@pytest.mark.interop
@pytest.mark.parametrize("der", [False, True], ids=["ok/pem", "ok/der"])
def test_a_csr_made_elsewhere_gets_a_certificate_through_a_token(
    console: Console, tmp_path: Path, der: bool
) -> None:
    key, csr = openssl_csr(tmp_path, "carol", der=der)
    crt = tmp_path / "carol.crt"
    token = console.ca.token("carol", not_after="1h")
    ok("cert", "request", "carol", crt, "--csr", csr, "--token", token, *console.client_args())
    certificate = issued_for(crt, key)
    assert certificate.subject.rfc4514_string() == "CN=carol"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["carol.crt", "carol.csr", "elsewhere"]


@pytest.mark.interop
def test_a_csr_made_elsewhere_gets_a_certificate_through_approval(
    console: Console, tmp_path: Path
) -> None:
    key, csr = openssl_csr(tmp_path, "dora")
    crt = tmp_path / "dora.crt"
    args = ["cert", "request", "dora", crt, "--csr", csr, "--provisioner", "open-doors"]
    first = ok(*args, *console.client_args())
    request_id = re.search(r"Request ([0-9a-f]{32})", first.stderr)
    assert request_id is not None and not crt.exists()
    ok("ca", "requests", "approve", request_id.group(1), *console.officer_args())
    ok(*args, "--wait", *console.client_args())
    assert issued_for(crt, key).subject.rfc4514_string() == "CN=dora"
    assert not (tmp_path / "dora.crt.request").exists()


@pytest.mark.interop
def test_a_rejected_csr_request_writes_no_certificate(console: Console, tmp_path: Path) -> None:
    _, csr = openssl_csr(tmp_path, "eve")
    crt = tmp_path / "eve.crt"
    args = ["cert", "request", "eve", crt, "--csr", csr, "--provisioner", "open-doors"]
    first = ok(*args, *console.client_args())
    request_id = re.search(r"Request ([0-9a-f]{32})", first.stderr)
    assert request_id is not None
    reason = ["--reason", "unknown device"]
    ok("ca", "requests", "reject", request_id.group(1), *reason, *console.officer_args())
    answer = refused(*args, "--wait", *console.client_args())
    assert "rejected" in answer.stderr and not crt.exists()


@pytest.mark.interop
def test_a_csr_with_a_bad_signature_is_refused_before_it_is_sent(
    console: Console, tmp_path: Path
) -> None:
    _, csr = openssl_csr(tmp_path, "frank", der=True)
    data = bytearray(csr.read_bytes())
    data[-3] ^= 0x01  # inside the signature value
    csr.write_bytes(bytes(data))
    crt = tmp_path / "frank.crt"
    token = console.ca.token("frank", not_after="1h")
    answer = refused(
        "cert", "request", "frank", crt, "--csr", csr, "--token", token, *console.client_args()
    )
    assert "signature does not verify" in answer.stderr and not crt.exists()
    # the same token still works: nothing was sent
    _, good = openssl_csr(tmp_path, "frank")
    ok("cert", "request", "frank", crt, "--csr", good, "--token", token, *console.client_args())


@pytest.mark.interop
def test_a_csr_whose_subject_disagrees_with_the_token_is_refused(
    console: Console, tmp_path: Path
) -> None:
    _, csr = openssl_csr(tmp_path, "mallory")
    crt = tmp_path / "mallory.crt"
    token = console.ca.token("grace", not_after="1h")
    by_ca = refused(
        "cert", "request", "mallory", crt, "--csr", csr, "--token", token, *console.client_args()
    )
    assert "mallory" in by_ca.stderr and "not authorized" in by_ca.stderr and not crt.exists()
    here = refused(
        "cert", "request", "grace", crt, "--csr", csr, "--token", token, *console.client_args()
    )
    assert "asks for CN=mallory" in here.stderr and not crt.exists()


def offline_client_args(folder: Path) -> list[str | Path]:
    """A CA that is never reached: these refusals come before any connection."""
    root = folder / "root.pem"
    root.write_bytes(make_test_ca().root.public_bytes(serialization.Encoding.PEM))
    return ["--ca-url", "https://127.0.0.1:9", "--root", root]


def test_a_file_that_is_no_csr_is_refused_in_one_line(tmp_path: Path) -> None:
    not_csr = tmp_path / "notes.txt"
    not_csr.write_text("hello\n")
    answer = refused("cert", "request", "ivan", tmp_path / "ivan.crt", "--csr", not_csr,
                     "--token", "t", *offline_client_args(tmp_path))  # fmt: skip
    assert f"{not_csr}: not a PKCS#10 certificate request (PEM or DER)" in answer.stderr


def test_csr_and_a_key_file_together_are_refused(tmp_path: Path) -> None:
    _, csr = openssl_csr(tmp_path, "heidi")
    crt, key = tmp_path / "heidi.crt", tmp_path / "heidi.key"
    answer = refused("cert", "request", "heidi", crt, key, "--csr", csr, "--token", "t",
                     *offline_client_args(tmp_path))  # fmt: skip
    assert "drop KEY" in answer.stderr and not key.exists()
