"""The offline command line: every command of the foundation, its output and its refusals."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ostiary.core.encoding import format_serial

from ..conftest import require_tool
from .conftest import CLI, PASSWORD

MakeCSR = Callable[..., tuple[Path, Path]]


def certificate_count(ca_dir: Path) -> int:
    with sqlite3.connect(ca_dir / "ostiary.db") as db:
        return int(db.execute("select count(*) from certificates").fetchone()[0])


def load_chain(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def test_init_makes_a_ca_folder_and_prints_the_root_fingerprint(
    cli: CLI, password_file: Path
) -> None:
    result = cli.ok(
        "ca", "init", "--name", "Home", "--password-file", password_file, "--key-type", "p384"
    )
    root = x509.load_pem_x509_certificate((cli.home / "certs/root.crt").read_bytes())
    assert result.stdout.strip() == root.fingerprint(hashes.SHA256()).hex()
    assert (cli.home / "ostiary.toml").exists()
    for key in ("root.key", "intermediate.key"):
        path = cli.home / "secrets" / key
        assert path.stat().st_mode & 0o777 == 0o600
        assert b"ENCRYPTED PRIVATE KEY" in path.read_bytes()
    intermediate = x509.load_pem_x509_certificate(
        (cli.home / "certs/intermediate.crt").read_bytes()
    )
    assert (
        intermediate.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
        == 0
    )
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 1
    assert intermediate.not_valid_after_utc <= root.not_valid_after_utc
    assert root.public_key().curve.name == "secp384r1"  # type: ignore[union-attr]


def test_init_refuses_to_overwrite_an_existing_ca(
    cli: CLI, ca_dir: Path, password_file: Path
) -> None:
    before = (ca_dir / "certs/root.crt").read_bytes()
    cli.refused("ca", "init", "--name", "Again", "--password-file", password_file)
    assert (ca_dir / "certs/root.crt").read_bytes() == before


def test_init_sets_the_ca_lifetime_ceiling_that_signing_then_obeys(
    cli: CLI, password_file: Path, make_csr: MakeCSR, tmp_path: Path
) -> None:
    cli.ok(
        "ca", "init", "--name", "Home", "--password-file", password_file,
        "--max-lifetime", "90d", "--default-lifetime", "2d",
    )  # fmt: skip
    settings = (cli.home / "ostiary.toml").read_text()
    assert 'max_lifetime = "90d"' in settings and 'default_lifetime = "2d"' in settings
    csr, _ = make_csr("phone")
    for days, accepted in ((90, True), (91, False)):
        out = tmp_path / f"phone-{days}.crt"
        args = ("ca", "sign", csr, "--out", out, "--not-after", f"{days}d")
        if accepted:
            cli.ok(*args, "--password-file", password_file)
        else:
            cli.refused(*args, "--password-file", password_file)
        assert out.exists() is accepted


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--key-type", "rsa1024"], "unknown key type", id="fail/weak-key-type"),
        pytest.param(["--url", "ftp://x"], "url", id="fail/bad-url"),
        pytest.param(["--address", "nowhere"], "address", id="fail/bad-address"),
        pytest.param(["--max-lifetime", "soon"], "not a duration", id="fail/bad-lifetime"),
        pytest.param(["--max-lifetime", "1h"], "default <= maximum", id="fail/max-under-default"),
    ],
)
def test_init_refuses_bad_settings_and_writes_nothing(
    cli: CLI, password_file: Path, args: list[str], message: str
) -> None:
    result = cli.refused("ca", "init", "--name", "X", "--password-file", password_file, *args)
    assert message in result.stderr.lower()
    assert not cli.home.exists()


@pytest.mark.interop
def test_signed_client_chain_verifies_with_openssl(
    cli: CLI, ca_dir: Path, password_file: Path, make_csr: MakeCSR, tmp_path: Path
) -> None:
    openssl = require_tool("openssl")
    csr, _ = make_csr("alice", "alice@example.com")
    out = tmp_path / "alice.crt"
    cli.ok("ca", "sign", csr, "--out", out, "--profile", "client", "--password-file", password_file)
    leaf, _intermediate = load_chain(out)
    assert leaf.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.RFC822Name) == ["alice@example.com"]
    cdp = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert cdp[0].full_name[0].value == "http://ca.test:8080/crl"  # type: ignore[index]
    subprocess.run(
        [
            openssl,
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            ca_dir / "certs/root.crt",
            "-untrusted",
            ca_dir / "certs/intermediate.crt",
            out,
        ],
        check=True,
        capture_output=True,
    )
    assert certificate_count(ca_dir) == 1


def test_sign_with_explicit_names_and_upn_for_the_user_profile(
    cli: CLI, ca_dir: Path, password_file: Path, make_csr: MakeCSR, tmp_path: Path
) -> None:
    csr, _ = make_csr("bob")
    out = tmp_path / "bob.crt"
    cli.ok(
        "ca",
        "sign",
        csr,
        "--out",
        out,
        "--profile",
        "user",
        "--upn",
        "bob@corp.example",
        "--san",
        "bob@corp.example",
        "--subject",
        "bob",
        "--not-after",
        "7d",
        "--password-file",
        password_file,
    )
    leaf = load_chain(out)[0]
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days == 7
    result = cli.ok("cert", "inspect", out, "--format", "json")
    described = json.loads(result.stdout)[0]
    assert "upn:bob@corp.example" in described["extensions"]["san"]
    ids = described["entra_certificate_user_ids"]
    assert "X509:<PN>bob@corp.example" in ids
    assert "X509:<RFC822>bob@corp.example" in ids
    serial = leaf.serial_number.to_bytes(20, "big").lstrip(b"\0")
    assert any(
        i.endswith(f"<SR>{serial[::-1].hex()}") and "CN=Test Intermediate CA" in i for i in ids
    )


def _csr_with(key: object, common_name: str = "eve", sans: tuple[str, ...] = ()) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    )
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)  # type: ignore[arg-type]


def _forged_csr() -> bytes:
    der = bytearray(
        x509.load_pem_x509_csr(
            _csr_with(ec.generate_private_key(ec.SECP256R1()), "eve-x")
        ).public_bytes(serialization.Encoding.DER)
    )
    der[der.find(b"eve-x") + 4] ^= 0x01
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    ("csr_pem", "extra", "message"),
    [
        pytest.param(_forged_csr(), [], "signature", id="fail/bad-csr-signature"),
        pytest.param(
            _csr_with(rsa.generate_private_key(65537, 1024)), [], "too weak", id="fail/rsa-1024"
        ),
        pytest.param(
            _csr_with(ec.generate_private_key(ec.SECP256R1()), sans=("evil.example",)),
            ["--san", "good.example"],
            "not authorized",
            id="fail/name-outside-authorization",
        ),
        pytest.param(
            _csr_with(ec.generate_private_key(ec.SECP256R1())),
            ["--not-after", "90d"],
            "exceeds the maximum",
            id="fail/lifetime-over-maximum",
        ),
        pytest.param(
            _csr_with(ec.generate_private_key(ec.SECP256R1())),
            ["--not-after", "2099-01-01T00:00:00Z"],
            "exceeds the maximum",
            id="fail/not-after-past-issuer",
        ),
        pytest.param(
            b"this is not a CSR", [], "not a certificate signing request", id="fail/garbage"
        ),
        pytest.param(b"", [], "not a certificate signing request", id="fail/empty"),
        pytest.param(
            _csr_with(ec.generate_private_key(ec.SECP256R1())),
            ["--profile", "nonsense"],
            "unknown profile",
            id="fail/unknown-profile",
        ),
    ],
)
def test_sign_refusals_are_one_line_and_write_nothing(
    cli: CLI,
    ca_dir: Path,
    password_file: Path,
    tmp_path: Path,
    csr_pem: bytes,
    extra: list[str],
    message: str,
) -> None:
    csr = tmp_path / "req.csr"
    csr.write_bytes(csr_pem)
    out = tmp_path / "out.crt"
    result = cli.refused("ca", "sign", csr, "--out", out, "--password-file", password_file, *extra)
    assert message in result.stderr
    assert not out.exists()
    assert certificate_count(ca_dir) == 0


def test_not_after_past_the_issuer_is_refused_even_within_the_maximum(
    cli: CLI, ca_dir: Path, password_file: Path, make_csr: MakeCSR, tmp_path: Path
) -> None:
    config = ca_dir / "ostiary.toml"
    config.write_text(config.read_text().replace('max_lifetime = "30d"', 'max_lifetime = "36500d"'))
    csr, _ = make_csr("carol")
    out = tmp_path / "carol.crt"
    result = cli.refused(
        "ca",
        "sign",
        csr,
        "--out",
        out,
        "--not-after",
        "2090-01-01T00:00:00Z",
        "--password-file",
        password_file,
    )
    assert "past the issuing CA's not_after" in result.stderr
    assert not out.exists()


def test_wrong_ca_password_is_refused(
    cli: CLI, ca_dir: Path, make_csr: MakeCSR, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n")
    csr, _ = make_csr("dave")
    out = tmp_path / "dave.crt"
    result = cli.refused("ca", "sign", csr, "--out", out, "--password-file", wrong)
    assert "wrong password" in result.stderr
    assert "not the password" not in result.stderr and PASSWORD not in result.stderr
    assert not out.exists()


def test_missing_password_without_a_terminal_is_one_line(
    cli: CLI, ca_dir: Path, make_csr: MakeCSR, tmp_path: Path
) -> None:
    csr, _ = make_csr("erin")
    result = cli.refused("ca", "sign", csr, "--out", tmp_path / "x.crt")
    assert "--password-file" in result.stderr


@pytest.mark.interop
def test_revoked_certificate_is_listed_in_the_crl_and_rejected(
    cli: CLI, ca_dir: Path, password_file: Path, make_csr: MakeCSR, tmp_path: Path
) -> None:
    openssl = require_tool("openssl")
    csr, _ = make_csr("frank", "frank@example.com")
    out = tmp_path / "frank.crt"
    cli.ok("ca", "sign", csr, "--out", out, "--password-file", password_file)
    leaf = load_chain(out)[0]
    crl_before = tmp_path / "before.crl"
    cli.ok("ca", "crl", "--out", crl_before, "--password-file", password_file)
    cli.ok("cert", "verify", out, "--roots", ca_dir / "certs/root.crt", "--crl", crl_before)

    cli.ok(
        "ca",
        "revoke",
        format_serial(leaf.serial_number),
        "--reason",
        "key-compromise",
        "--password-file",
        password_file,
    )
    result = cli.refused(
        "ca", "revoke", format_serial(leaf.serial_number), "--password-file", password_file
    )
    assert "already revoked" in result.stderr

    crl_pem = tmp_path / "ca.crl.pem"
    cli.ok("ca", "crl", "--out", crl_pem, "--pem", "--password-file", password_file)
    crl = x509.load_pem_x509_crl(crl_pem.read_bytes())
    entry = crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
    assert entry is not None
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        == x509.ReasonFlags.key_compromise
    )
    before = x509.load_der_x509_crl(crl_before.read_bytes())
    number = x509.CRLNumber
    assert crl.extensions.get_extension_for_class(number).value.crl_number > (
        before.extensions.get_extension_for_class(number).value.crl_number
    )
    subprocess.run(
        [
            openssl,
            "crl",
            "-in",
            crl_pem,
            "-CAfile",
            ca_dir / "certs/intermediate.crt",
            "-noout",
            "-verify",
        ],
        check=True,
        capture_output=True,
    )
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(
        (ca_dir / "certs/root.crt").read_bytes() + (ca_dir / "certs/intermediate.crt").read_bytes()
    )
    failed = subprocess.run(
        [openssl, "verify", "-crl_check", "-CAfile", bundle, "-CRLfile", crl_pem, out],
        capture_output=True,
        text=True,
    )
    assert failed.returncode != 0 and "revoked" in failed.stdout + failed.stderr
    result = cli.refused(
        "cert", "verify", out, "--roots", ca_dir / "certs/root.crt", "--crl", crl_pem
    )
    assert "revoked" in result.stderr


@pytest.mark.parametrize(
    ("serial", "reason", "message"),
    [
        pytest.param("zz:top", "unspecified", "not a serial number", id="fail/garbage-serial"),
        pytest.param("01:02", "unspecified", "", id="fail/unknown-serial"),
        pytest.param("01:02", "because", "unknown revocation reason", id="fail/unknown-reason"),
    ],
)
def test_revoke_refusals(
    cli: CLI, ca_dir: Path, password_file: Path, serial: str, reason: str, message: str
) -> None:
    result = cli.refused(
        "ca", "revoke", serial, "--reason", reason, "--password-file", password_file
    )
    assert message in result.stderr


def test_verify_refuses_a_certificate_from_another_ca(
    cli: CLI, ca_dir: Path, tmp_path: Path
) -> None:
    crt, key = tmp_path / "self.crt", tmp_path / "self.key"
    cli.ok("cert", "create", "mallory", crt, key, "--san", "mallory@example.com")
    result = cli.refused("cert", "verify", crt, "--roots", ca_dir / "certs/root.crt")
    assert "does not verify" in result.stderr


def test_cert_create_writes_a_private_key_and_csr(cli: CLI, tmp_path: Path) -> None:
    csr, key = tmp_path / "d.csr", tmp_path / "d.key"
    cli.ok(
        "cert",
        "create",
        "door",
        csr,
        key,
        "--csr",
        "--kty",
        "ed25519",
        "--san",
        "uri:spiffe://home/door",
    )
    assert key.stat().st_mode & 0o777 == 0o600
    request = x509.load_pem_x509_csr(csr.read_bytes())
    assert request.is_signature_valid
    result = cli.ok("cert", "inspect", csr, "--format", "json")
    assert json.loads(result.stdout)["san"] == ["uri:spiffe://home/door"]
    cli.refused("cert", "create", "door", csr, key, "--csr")  # exists: no silent overwrite


def test_inspect_text_and_short_forms(cli: CLI, ca_dir: Path, password_file: Path) -> None:
    text = cli.ok("cert", "inspect", ca_dir / "certs/root.crt").stdout
    assert "CN=Test Root CA" in text and "key_cert_sign" in text
    short = cli.ok("cert", "inspect", ca_dir / "certs/intermediate.crt", "--short").stdout
    assert len(short.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"garbage", id="fail/garbage"),
        pytest.param(b"", id="fail/empty"),
        pytest.param(
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", id="fail/wrong-pem"
        ),
    ],
)
def test_inspect_refuses_what_it_cannot_read(cli: CLI, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "thing"
    path.write_bytes(content)
    cli.refused("cert", "inspect", path)


@pytest.mark.parametrize("compat", [False, True], ids=["modern", "compat"])
def test_p12_export_round_trips(
    cli: CLI, ca_dir: Path, password_file: Path, make_csr: MakeCSR, tmp_path: Path, compat: bool
) -> None:
    from cryptography.hazmat.primitives.serialization import pkcs12

    csr, key = make_csr("gina", "gina@example.com")
    crt = tmp_path / "gina.crt"
    cli.ok("ca", "sign", csr, "--out", crt, "--password-file", password_file)
    p12_password = tmp_path / "p12pw"
    p12_password.write_text("p12 secret\n")
    out = tmp_path / "gina.p12"
    args = [
        "cert",
        "p12",
        out,
        crt,
        key,
        "--ca",
        ca_dir / "certs/root.crt",
        "--password-file",
        p12_password,
    ]
    cli.ok(*args, *(["--compat"] if compat else []))
    assert out.stat().st_mode & 0o777 == 0o600
    loaded = pkcs12.load_pkcs12(out.read_bytes(), b"p12 secret")
    assert loaded.cert is not None and loaded.cert.certificate == load_chain(crt)[0]
    assert len(loaded.additional_certs) == 2
    no_pw = tmp_path / "gina-nopw.p12"
    cli.ok("cert", "p12", no_pw, crt, key, "--no-password")
    cli.refused("cert", "p12", tmp_path / "x.p12", crt, key)  # neither password nor --no-password
    _, other_key = make_csr("other")
    result = cli.refused("cert", "p12", tmp_path / "y.p12", crt, other_key, "--no-password")
    assert "not the key" in result.stderr


def test_installed_script_runs_as_a_subprocess(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "ostiary"
    assert script.exists(), "the console script is installed with the package"
    done = subprocess.run([script, "version"], capture_output=True, text=True, check=True)
    assert done.stdout.strip()
    bad = subprocess.run(
        [script, "cert", "inspect", tmp_path / "missing.pem"], capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["ca", "no-such-command"], id="fail/unknown-command"),
        pytest.param(["ca", "init", "--key-type"], id="fail/option-without-value"),
        pytest.param(["cert", "inspect"], id="fail/missing-argument"),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(cli: CLI, args: list[str]) -> None:
    result = cli.refused(*args)
    assert result.exit_code == 2
    assert "see --help" in result.stderr


def test_device_commands_start_without_the_store_or_the_web_stack() -> None:
    """``ostiary cert ...`` runs on devices: no SQLAlchemy, Alembic or FastAPI at start-up."""
    code = (
        "import sys; import ostiary.cli.main; "
        "heavy = [m for m in ('sqlalchemy', 'alembic', 'fastapi', 'uvicorn') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_certificate_hold_is_not_a_reason_we_accept(
    cli: CLI, ca_dir: Path, password_file: Path
) -> None:
    result = cli.refused(
        "ca", "revoke", "01:02", "--reason", "certificateHold", "--password-file", password_file
    )
    assert "unknown revocation reason" in result.stderr


@pytest.mark.interop
def test_root_crl_is_made_offline_and_checks_the_whole_chain(
    cli: CLI, ca_dir: Path, password_file: Path, make_csr: MakeCSR, tmp_path: Path
) -> None:
    openssl = require_tool("openssl")
    csr, _ = make_csr("grace", "grace@example.com")
    leaf = tmp_path / "grace.crt"
    cli.ok("ca", "sign", csr, "--out", leaf, "--password-file", password_file)
    root_crl = tmp_path / "root.crl.pem"
    cli.ok("ca", "crl", "--root", "--pem", "--out", root_crl, "--password-file", password_file)
    root = x509.load_pem_x509_certificate((ca_dir / "certs/root.crt").read_bytes())
    crl = x509.load_pem_x509_crl(root_crl.read_bytes())
    assert crl.issuer == root.subject
    assert crl.is_signature_valid(root.public_key())  # type: ignore[arg-type]
    assert len(crl) == 0
    # The copy the server publishes at /root.crl is the same CRL.
    published = x509.load_der_x509_crl((ca_dir / "certs/root.crl").read_bytes())
    assert published == crl
    again = tmp_path / "again.crl"
    cli.ok("ca", "crl", "--root", "--out", again, "--password-file", password_file)
    number = x509.CRLNumber
    assert (
        x509.load_der_x509_crl(again.read_bytes())
        .extensions.get_extension_for_class(number)
        .value.crl_number
        > crl.extensions.get_extension_for_class(number).value.crl_number
    )

    issuing_crl = tmp_path / "issuing.crl.pem"
    cli.ok("ca", "crl", "--pem", "--out", issuing_crl, "--password-file", password_file)
    crls = tmp_path / "crls.pem"
    crls.write_bytes(root_crl.read_bytes() + issuing_crl.read_bytes())
    verified = verify_whole_chain(openssl, ca_dir, crls, leaf)
    assert verified.returncode == 0, verified.stderr
    # Without the root's CRL, checking the whole chain fails: the root CRL is what it needs.
    missing = verify_whole_chain(openssl, ca_dir, issuing_crl, leaf)
    assert missing.returncode != 0
    assert "unable to get certificate CRL" in missing.stdout + missing.stderr


def verify_whole_chain(
    openssl: str, ca_dir: Path, crls: Path, leaf: Path
) -> subprocess.CompletedProcess[str]:
    certs = ca_dir / "certs"
    return subprocess.run(
        [
            *(openssl, "verify", "-crl_check_all", "-CAfile", certs / "root.crt"),
            *("-untrusted", certs / "intermediate.crt", "-CRLfile", crls, leaf),
        ],
        capture_output=True,
        text=True,
    )


def test_root_crl_with_a_wrong_password_changes_nothing(
    cli: CLI, ca_dir: Path, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n")
    out = tmp_path / "root.crl"
    result = cli.refused("ca", "crl", "--root", "--out", out, "--password-file", wrong)
    assert result.stderr.startswith("error:")
    assert not out.exists()
    assert not (ca_dir / "certs/root.crl").exists()
