"""``ostiary cert ...``: commands for certificate holders (the client side)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ostiary.authority.folder import default_ca_dir
from ostiary.cli.console import note, out
from ostiary.cli.files import check_writable, read_input, write_file
from ostiary.cli.options import Force, Sans
from ostiary.cli.secrets import read_password_file
from ostiary.client.root_trust import cross_anchors
from ostiary.core.chain import verify_certificate_chain
from ostiary.core.describe import describe_certificate, describe_crl, describe_csr
from ostiary.core.encoding import (
    load_certificate_chain,
    load_crl,
    load_csr,
    pem_labels,
)
from ostiary.core.errors import BadRequest, MalformedInput
from ostiary.core.issuance import random_serial_number
from ostiary.core.keys import KeyType, generate_private_key, parse_key_type, signature_hash_for
from ostiary.core.names import parse_san, parse_subject
from ostiary.core.pkcs12 import export_pkcs12
from ostiary.core.printable import printable
from ostiary.signers.files import decrypt_private_key_pem, encrypt_private_key_pem

app = typer.Typer(help="Keys, requests and certificates on this machine.", no_args_is_help=True)


def load_private_key_file(
    path: Path,
    password_file: Path | None = None,
    *,
    tcti: str | None = None,
    pin_file: Path | None = None,
    pin_option: str | None = "--pin-file",
) -> Any:
    """A private key from a PEM file, decrypting it with the password file when given.

    A ``TSS2 PRIVATE KEY`` (``--key-store tpm``) gives a key that signs in the TPM, reached
    through ``tcti`` and unlocked with the PIN in ``pin_file`` (or their environment
    variables, :mod:`ostiary.cli.tpm`); ``pin_option`` is the option an error names for it.
    """
    from ostiary.client.tpm import is_tpm_key_pem

    data = read_input(path, "key file")
    if is_tpm_key_pem(data):
        from ostiary.cli.tpm import load_tpm_key_file

        return load_tpm_key_file(path, tcti=tcti, pin_file=pin_file, pin_option=pin_option)
    password = read_password_file(password_file) if password_file else None
    return decrypt_private_key_pem(data, password)


def dump_private_key(key: Any, password: bytes | None) -> bytes:
    """PEM PKCS#8; encrypted (PBES2, strong KDF) when a password is given."""
    if password:
        return encrypt_private_key_pem(key, password)
    data: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return data


@app.command()
def create(
    subject: Annotated[str, typer.Argument(help="Common name, or 'CN=..,O=..'.")],
    output: Annotated[Path, typer.Argument(metavar="CRT_OR_CSR", help="Certificate or CSR out.")],
    key_file: Annotated[Path, typer.Argument(metavar="KEY", help="Private key out (0600).")],
    csr: Annotated[bool, typer.Option("--csr", help="Write a CSR to send to the CA.")] = False,
    kty: Annotated[
        str, typer.Option("--kty", help="p256, p384, ed25519, rsa2048, rsa3072, rsa4096.")
    ] = KeyType.P256.value,
    san: Sans = None,
    not_after: Annotated[
        str, typer.Option("--not-after", help="Lifetime of a self-signed certificate.")
    ] = "24h",
    password_file: Annotated[
        Path | None, typer.Option("--password-file", help="Encrypt the new key with this password.")
    ] = None,
    force: Force = False,
) -> None:
    """Make a key and a CSR here (with --csr), or a self-signed certificate.

    The private key never leaves this machine: only the CSR goes to the CA.
    """
    from ostiary.core.lifetime import parse_duration

    name = parse_subject(subject)
    names = [parse_san(v) for v in san or []]
    key_type = parse_key_type(kty)
    password = read_password_file(password_file) if password_file else None
    lifetime = parse_duration(not_after)
    check_writable(output, key_file, force=force)
    key = generate_private_key(key_type)
    if csr:
        builder = x509.CertificateSigningRequestBuilder().subject_name(name)
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        data = builder.sign(key, signature_hash_for(key)).public_bytes(serialization.Encoding.PEM)
    else:
        now = datetime.now(UTC).replace(microsecond=0)
        builder_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if names:
            builder_cert = builder_cert.add_extension(
                x509.SubjectAlternativeName(names), critical=False
            )
        data = builder_cert.sign(key, signature_hash_for(key)).public_bytes(
            serialization.Encoding.PEM
        )
    write_file(key_file, dump_private_key(key, password), private=True)
    write_file(output, data)
    note(f"Wrote {'CSR' if csr else 'self-signed certificate'} {output} and key {key_file}")


def _describe_file(data: bytes) -> list[dict[str, Any]]:
    labels = pem_labels(data)
    if "CERTIFICATE REQUEST" in labels or "NEW CERTIFICATE REQUEST" in labels:
        return [describe_csr(load_csr(data))]
    if "X509 CRL" in labels:
        return [describe_crl(load_crl(data))]
    if "CERTIFICATE" in labels:
        return [describe_certificate(c) for c in load_certificate_chain(data)]
    if labels:
        raise MalformedInput(f"cannot inspect a PEM {labels[0]} block")
    for loader, describer in (
        (load_certificate_chain, lambda v: [describe_certificate(c) for c in v]),
        (load_csr, lambda v: [describe_csr(v)]),
        (load_crl, lambda v: [describe_crl(v)]),
    ):
        try:
            return describer(loader(data))  # type: ignore[no-untyped-call]
        except MalformedInput:
            continue
    raise MalformedInput("not a certificate, chain, CSR or CRL (PEM or DER)")


@app.command()
def inspect(
    file: Annotated[Path, typer.Argument(help="Certificate, chain, CSR or CRL (PEM or DER).")],
    output_format: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
    short: Annotated[bool, typer.Option("--short", help="One line per object.")] = False,
) -> None:
    """Show what a certificate, chain, CSR or CRL says, with the Entra binding strings."""
    if output_format not in ("text", "json"):
        raise BadRequest(f"--format must be text or json, not {output_format!r}")
    items = _describe_file(read_input(file, "file"))
    if output_format == "json":
        out.print_json(json.dumps(items if len(items) > 1 else items[0]))
        return
    for item in items:
        if short:
            out.print(printable(_short_line(item)), markup=False)
        else:
            for line in _lines(item):
                out.print(printable(line), markup=False)


def _short_line(item: dict[str, Any]) -> str:
    if item["type"] == "certificate":
        return (
            f"{item['subject']}  serial {item['serial_number']}  "
            f"{item['not_before']} .. {item['not_after']}  {item['public_key']}"
        )
    if item["type"] == "crl":
        return f"CRL {item['issuer']}  #{item['crl_number']}  {len(item['revoked'])} revoked"
    return f"CSR {item['subject']}  {item['public_key']}  san {', '.join(item['san'])}"


def _lines(item: dict[str, Any]) -> list[str]:
    """``key  value`` lines, never wrapped nor boxed: every value (a fingerprint, an Entra
    ``X509:<SKI>...`` string) stays whole on its line, to copy as is, whatever the width.
    """
    rows: list[tuple[str, Any]] = []
    for key, value in item.items():
        if key == "type":
            continue
        if isinstance(value, dict):
            rows.extend((f"{key}.{sub}", sub_value) for sub, sub_value in value.items())
        else:
            rows.append((key, value))
    width = max((len(key) for key, _ in rows), default=0)
    lines = [item["type"].upper()]
    for key, value in rows:
        values = [_text(v) for v in value] if isinstance(value, list) else [_text(value)]
        for index, text in enumerate(values or ["-"]):
            lines.append(f"  {key if index == 0 else '':<{width}}  {text}")
    return lines


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(_text(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


@app.command()
def p12(
    out_file: Annotated[Path, typer.Argument(metavar="OUT.p12")],
    cert_file: Annotated[Path, typer.Argument(metavar="CRT", help="Certificate (and chain).")],
    key_file: Annotated[Path, typer.Argument(metavar="KEY")],
    ca: Annotated[
        list[Path] | None, typer.Option("--ca", help="More CA certificates to include.")
    ] = None,
    password_file: Annotated[
        Path | None, typer.Option("--password-file", help="Password for the .p12.")
    ] = None,
    no_password: Annotated[
        bool, typer.Option("--no-password", help="No password (for browsers that import so).")
    ] = False,
    compat: Annotated[
        bool,
        typer.Option("--compat", help="3DES + SHA-1 MAC for older iOS/macOS/Android/Windows."),
    ] = False,
    key_password_file: Annotated[
        Path | None, typer.Option("--key-password-file", help="Password of an encrypted KEY.")
    ] = None,
    force: Force = False,
) -> None:
    """Bundle a certificate, its chain and its key into PKCS#12 for browsers and phones."""
    if no_password and password_file:
        raise BadRequest("give either --password-file or --no-password, not both")
    if not no_password and not password_file:
        raise BadRequest("give --password-file F, or --no-password for a .p12 without one")
    from ostiary.client.tpm import is_tpm_key_pem

    if is_tpm_key_pem(read_input(key_file, "key file")):
        raise BadRequest(
            f"{key_file} is held by a TPM and cannot leave it, so it cannot go into a .p12 "
            "(use it in place with the tpm2 OpenSSL provider: docs/tpm.md)"
        )
    password = read_password_file(password_file) if password_file else None
    check_writable(out_file, force=force)
    chain = load_certificate_chain(read_input(cert_file, "certificate"))
    extra = [c for path in ca or [] for c in load_certificate_chain(read_input(path, "CA file"))]
    key = load_private_key_file(key_file, key_password_file)
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if not isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise BadRequest("this key type cannot go into a .p12")
    if key.public_key() != chain[0].public_key():
        raise BadRequest(f"{key_file} is not the key of the certificate in {cert_file}")
    data = export_pkcs12(
        chain[0],
        key,
        ca_certificates=[*chain[1:], *extra],
        password=password,
        compat=compat,
    )
    write_file(out_file, data, private=True)
    note(f"Wrote {out_file} ({'compat: 3DES/SHA-1' if compat else 'AES-256/SHA-256'})")


@app.command()
def verify(
    cert_file: Annotated[Path, typer.Argument(metavar="CRT", help="Certificate (and chain).")],
    roots: Annotated[
        Path | None, typer.Option("--roots", help="Trusted roots (default: the CA folder's).")
    ] = None,
    crl: Annotated[
        list[Path] | None, typer.Option("--crl", help="CRL to check revocation against.")
    ] = None,
    untrusted: Annotated[
        list[Path] | None,
        typer.Option(
            "--untrusted",
            help="More intermediates (not trusted, only for building the chain): e.g. the "
            "cross-certificates of /roots, to reach a new root from an old one.",
        ),
    ] = None,
) -> None:
    """Check a certificate against trusted roots (and CRLs): exit 0 if it is good."""
    chain = load_certificate_chain(read_input(cert_file, "certificate"))
    for path in untrusted or []:
        chain.extend(load_certificate_chain(read_input(path, "certificates file")))
    roots_path = roots or default_ca_dir() / "certs" / "root.crt"
    trusted = load_certificate_chain(read_input(roots_path, "roots file"))
    crls = [load_crl(read_input(path, "CRL")) for path in crl or []]
    now = datetime.now(UTC)
    cross = cross_anchors(trusted, chain[1:], now=now)  # a new root, reached from an old one
    result = verify_certificate_chain(
        chain[0], intermediates=chain[1:], roots=[*trusted, *cross], now=now, crls=crls
    )
    length = len(result.chain) + (result.chain[-1] in cross)
    checked = ", revocation checked" if result.revocation_checked else ""
    through = ", through a cross-certificate" if result.chain[-1] in cross else ""
    out.print(f"{cert_file}: OK ({length} certificates{checked}{through})", markup=False)


from ostiary.cli.ssh import ssh_pubkey as _ssh_pubkey  # noqa: E402 - docs/ssh.md

app.command("ssh-pubkey")(_ssh_pubkey)
