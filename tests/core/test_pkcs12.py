"""PKCS #12 export: round trips, the algorithms inside, and openssl, keytool and pk12util."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from hypothesis import given
from hypothesis import strategies as st

from ostiary.core.errors import BadRequest, MalformedInput, WrongPassword
from ostiary.core.keys import KeyType, generate_private_key
from ostiary.core.pkcs12 import (
    COMPAT_ITERATIONS,
    MODERN_ITERATIONS,
    export_pkcs12,
    load_pkcs12,
)

from ..conftest import TestCA, require_tool

PASSWORD = b"correct horse battery staple"
Leaf = tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]

#: The four files a device may be handed: (compat, password).
VARIANTS = [
    pytest.param(False, PASSWORD, id="modern-password"),
    pytest.param(False, None, id="modern-no-password"),
    pytest.param(True, PASSWORD, id="compat-password"),
    pytest.param(True, None, id="compat-no-password"),
]


@pytest.fixture(scope="module")
def leaf(test_ca: TestCA) -> Leaf:
    return test_ca.issue("alice", ("alice@example.com",))


@pytest.fixture(scope="module")
def exported(test_ca: TestCA, leaf: Leaf) -> dict[tuple[bool, bytes | None], bytes]:
    """Each variant once, with the real iteration counts, shared by the module."""
    return {
        (compat, password): export_pkcs12(
            leaf[0],
            leaf[1],
            ca_certificates=[test_ca.intermediate, test_ca.root],
            password=password,
            compat=compat,
            friendly_name=b"alice",
        )
        for compat in (False, True)
        for password in (PASSWORD, None)
    }


# ------------------------------------------------------------------------ round trips


@pytest.mark.parametrize(("compat", "password"), VARIANTS)
@pytest.mark.parametrize("key_type", [KeyType.P256, KeyType.RSA2048, KeyType.ED25519])
def test_export_round_trips_key_certificate_and_chain(
    test_ca: TestCA, key_type: KeyType, compat: bool, password: bytes | None
) -> None:
    certificate, key = test_ca.issue(
        "bob", ("bob@example.com",), key=generate_private_key(key_type)
    )
    data = export_pkcs12(
        certificate,
        key,
        ca_certificates=[test_ca.intermediate, test_ca.root],
        password=password,
        compat=compat,
        friendly_name=b"bob's device",
        iterations=1000,
    )
    loaded = load_pkcs12(data, password)
    assert loaded.cert is not None
    assert loaded.cert.certificate == certificate
    assert loaded.cert.friendly_name == b"bob's device"
    assert loaded.key is not None
    assert loaded.key.public_key() == key.public_key()
    assert [c.certificate for c in loaded.additional_certs] == [test_ca.intermediate, test_ca.root]


def test_no_password_file_opens_with_empty_password_too(
    exported: dict[tuple[bool, bytes | None], bytes], leaf: Leaf
) -> None:
    loaded = load_pkcs12(exported[(False, None)], b"")
    assert loaded.cert is not None
    assert loaded.cert.certificate == leaf[0]


# ------------------------------------------------------------------ what is inside


def _pfx(data: bytes) -> asn1_pkcs12.Pfx:
    return asn1_pkcs12.Pfx.load(data)


def _safe_contents(data: bytes) -> list[tuple[str, object]]:
    """(content type, content) of each ContentInfo in the authenticated safe."""
    pfx = _pfx(data)
    return [(info["content_type"].native, info["content"]) for info in pfx.authenticated_safe]


def _key_algorithm(data: bytes) -> asn1_keys.EncryptedPrivateKeyInfo:
    for kind, content in _safe_contents(data):
        if kind != "data":
            continue
        for bag in asn1_pkcs12.SafeContents.load(content.native):  # type: ignore[attr-defined]
            if bag["bag_id"].native == "pkcs8_shrouded_key_bag":
                return bag["bag_value"]["encryption_algorithm"]
    raise AssertionError("no shrouded key bag")


@pytest.mark.parametrize(("compat", "password"), VARIANTS)
def test_mac_uses_the_encodings_hash(
    exported: dict[tuple[bool, bytes | None], bytes], compat: bool, password: bytes | None
) -> None:
    mac = _pfx(exported[(compat, password)])["mac_data"]
    assert mac["mac"]["digest_algorithm"]["algorithm"].native == ("sha1" if compat else "sha256")
    assert mac["iterations"].native == COMPAT_ITERATIONS


@pytest.mark.parametrize("password", [PASSWORD, None], ids=["password", "no-password"])
def test_modern_key_uses_pbes2_aes256_pbkdf2_sha256(
    exported: dict[tuple[bool, bytes | None], bytes], password: bytes | None
) -> None:
    algorithm = _key_algorithm(exported[(False, password)])
    assert algorithm["algorithm"].native == "pbes2"
    parameters = algorithm["parameters"]
    assert parameters["encryption_scheme"]["algorithm"].native == "aes256_cbc"
    kdf = parameters["key_derivation_func"]
    assert kdf["algorithm"].native == "pbkdf2"
    assert kdf["parameters"]["prf"]["algorithm"].native == "sha256"
    expected = MODERN_ITERATIONS if password else COMPAT_ITERATIONS
    assert kdf["parameters"]["iteration_count"].native == expected


@pytest.mark.parametrize("password", [PASSWORD, None], ids=["password", "no-password"])
def test_compat_uses_triple_des_and_never_rc2(
    exported: dict[tuple[bool, bytes | None], bytes], password: bytes | None
) -> None:
    data = exported[(True, password)]
    algorithm = _key_algorithm(data)
    assert algorithm["algorithm"].native == "pkcs12_sha1_tripledes_3key"
    for kind, content in _safe_contents(data):
        if kind == "encrypted_data":
            scheme = content["encrypted_content_info"]["content_encryption_algorithm"]  # type: ignore[index]
            assert scheme["algorithm"].native == "pkcs12_sha1_tripledes_3key"
    assert b"\x2a\x86\x48\x86\xf7\x0d\x01\x0c\x01\x06" not in data  # pbeWithSHAAnd40BitRC2-CBC
    assert b"\x2a\x86\x48\x86\xf7\x0d\x01\x0c\x01\x05" not in data  # pbeWithSHAAnd128BitRC2-CBC


# ---------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("compat", "password", "attempt"),
    [
        pytest.param(False, PASSWORD, b"wrong", id="fail/modern-wrong-password"),
        pytest.param(True, PASSWORD, b"wrong", id="fail/compat-wrong-password"),
        pytest.param(False, PASSWORD, None, id="fail/modern-no-password-given"),
        pytest.param(False, None, b"something", id="fail/password-for-empty-file"),
        pytest.param(True, None, b"something", id="fail/compat-password-for-empty-file"),
    ],
)
def test_wrong_password_is_refused(
    exported: dict[tuple[bool, bytes | None], bytes],
    compat: bool,
    password: bytes | None,
    attempt: bytes | None,
) -> None:
    with pytest.raises(WrongPassword):
        load_pkcs12(exported[(compat, password)], attempt)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="fail/empty"),
        pytest.param(b"not a pkcs12 file", id="fail/garbage"),
        pytest.param(b"\x30\x03\x02\x01\x03", id="fail/bare-sequence"),
    ],
)
def test_garbage_is_not_a_pkcs12_file(data: bytes) -> None:
    with pytest.raises(MalformedInput):
        load_pkcs12(data, PASSWORD)


@given(data=st.binary(max_size=400))
def test_any_bytes_are_refused_with_a_clear_error(data: bytes) -> None:
    with pytest.raises((MalformedInput, WrongPassword)):
        load_pkcs12(data, PASSWORD)


def test_truncated_file_is_not_a_pkcs12_file(
    exported: dict[tuple[bool, bytes | None], bytes],
) -> None:
    with pytest.raises(MalformedInput):
        load_pkcs12(exported[(False, PASSWORD)][:-40], PASSWORD)


def test_key_of_another_certificate_is_refused(leaf: Leaf) -> None:
    with pytest.raises(BadRequest, match="does not belong"):
        export_pkcs12(leaf[0], ec.generate_private_key(ec.SECP256R1()), password=PASSWORD)


@pytest.mark.parametrize(
    ("password", "iterations"),
    [
        pytest.param(b"", None, id="fail/empty-bytes-password"),
        pytest.param(PASSWORD, 999, id="fail/too-few-iterations"),
    ],
)
def test_bad_export_options_are_refused(
    leaf: Leaf, password: bytes, iterations: int | None
) -> None:
    with pytest.raises(BadRequest):
        export_pkcs12(leaf[0], leaf[1], password=password, iterations=iterations)


@pytest.mark.parametrize("password", [PASSWORD, None], ids=["password", "no-password"])
def test_friendly_name_that_is_not_utf8_is_refused(leaf: Leaf, password: bytes | None) -> None:
    with pytest.raises(BadRequest, match="UTF-8"):
        export_pkcs12(leaf[0], leaf[1], password=password, friendly_name=b"\xff\xfe")


# ------------------------------------------------------------------------- real tools


def _write(folder: Path, data: bytes) -> Path:
    path = folder / "device.p12"
    path.write_bytes(data)
    return path


def _run(command: list[str | Path], **kwargs: object) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    return f"{result.returncode}\n{result.stdout}{result.stderr}"


@pytest.mark.interop
@pytest.mark.parametrize(("compat", "password"), VARIANTS)
def test_openssl_opens_pkcs12(
    exported: dict[tuple[bool, bytes | None], bytes],
    tmp_path: Path,
    compat: bool,
    password: bytes | None,
) -> None:
    # OpenSSL 3 reads 3DES without -legacy: only RC2, RC4 and single DES need it.
    openssl = require_tool("openssl")
    path = _write(tmp_path, exported[(compat, password)])
    secret = (password or b"").decode()
    output = _run([openssl, "pkcs12", "-info", "-in", path, "-passin", f"pass:{secret}", "-nodes"])
    assert output.startswith("0\n"), output
    assert output.count("BEGIN CERTIFICATE") == 3
    assert output.count("BEGIN PRIVATE KEY") == 1
    assert "friendlyName: alice" in output


@pytest.mark.interop
@pytest.mark.parametrize(("compat", "password"), VARIANTS)
def test_openssl_refuses_wrong_password(
    exported: dict[tuple[bool, bytes | None], bytes],
    tmp_path: Path,
    compat: bool,
    password: bytes | None,
) -> None:
    openssl = require_tool("openssl")
    path = _write(tmp_path, exported[(compat, password)])
    output = _run([openssl, "pkcs12", "-info", "-in", path, "-passin", "pass:wrong", "-nodes"])
    assert not output.startswith("0\n")
    assert "BEGIN PRIVATE KEY" not in output


@pytest.mark.interop
@pytest.mark.parametrize(("compat", "password"), VARIANTS)
def test_keytool_lists_private_key_entry(
    exported: dict[tuple[bool, bytes | None], bytes],
    tmp_path: Path,
    compat: bool,
    password: bytes | None,
) -> None:
    keytool = require_tool("keytool")
    path = _write(tmp_path, exported[(compat, password)])
    secret = (password or b"").decode()
    output = _run(
        [keytool, "-list", "-v", "-storetype", "PKCS12", "-keystore", path, "-storepass", secret]
    )
    assert output.startswith("0\n"), output
    assert "Alias name: alice" in output
    assert "Entry type: PrivateKeyEntry" in output
    assert "Certificate chain length: 3" in output


@pytest.mark.interop
def test_keytool_refuses_wrong_password(
    exported: dict[tuple[bool, bytes | None], bytes], tmp_path: Path
) -> None:
    keytool = require_tool("keytool")
    path = _write(tmp_path, exported[(False, PASSWORD)])
    output = _run(
        [keytool, "-list", "-storetype", "PKCS12", "-keystore", path, "-storepass", "wrong"]
    )
    assert not output.startswith("0\n")
    assert "PrivateKeyEntry" not in output


@pytest.mark.interop
@pytest.mark.parametrize(("compat", "password"), VARIANTS)
def test_pk12util_lists_and_imports_key(
    exported: dict[tuple[bool, bytes | None], bytes],
    tmp_path: Path,
    compat: bool,
    password: bytes | None,
) -> None:
    pk12util, certutil = require_tool("pk12util"), require_tool("certutil")
    path = _write(tmp_path, exported[(compat, password)])
    secret = (password or b"").decode()
    listed = _run([pk12util, "-l", path, "-W", secret])
    assert listed.startswith("0\n"), listed
    assert "Friendly Name: alice" in listed
    database = tmp_path / "nssdb"
    database.mkdir()
    created = _run([certutil, "-N", "-d", f"sql:{database}", "--empty-password"])
    assert created.startswith("0\n"), created
    imported = _run([pk12util, "-i", path, "-d", f"sql:{database}", "-W", secret, "-K", ""])
    assert "PKCS12 IMPORT SUCCESSFUL" in imported, imported
    keys = _run([certutil, "-K", "-d", f"sql:{database}"])
    assert "alice" in keys, keys


@pytest.mark.interop
def test_pk12util_refuses_wrong_password(
    exported: dict[tuple[bool, bytes | None], bytes], tmp_path: Path
) -> None:
    pk12util = require_tool("pk12util")
    path = _write(tmp_path, exported[(True, PASSWORD)])
    output = _run([pk12util, "-l", path, "-W", "wrong"])
    assert not output.startswith("0\n")
    assert "Friendly Name" not in output
