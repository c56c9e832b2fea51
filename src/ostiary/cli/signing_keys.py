"""``ostiary ca key ...``: signing keys for remote signing (docs/remote-signing.md).

``create`` makes version 1 of a key in the CA folder (encrypted with the CA password, 0600)
and its certificate from this CA (recorded, audited, revocable) and writes the certificate,
the file to upload to the identity provider's app registration. ``rotate`` makes the next
version, which signs from then on. ``update`` changes the policy (audiences, callers, digest
signing); ``remove`` revokes the key's certificates and deletes it. ``list`` shows keys,
policies and versions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from ostiary.authority.remote_signing import signing_key_store
from ostiary.authority.signing_key_admin import (
    SigningKeyChange,
    remove_signing_key,
    update_signing_key,
)
from ostiary.authority.signing_keys import (
    create_signing_key,
    list_signing_keys,
    rotate_signing_key,
)
from ostiary.cli.console import note, out, shown
from ostiary.cli.files import check_writable, write_file
from ostiary.cli.options import CADir, Force, PasswordFile
from ostiary.cli.unlock import NoPasswordFile, open_ca_store, unlock_ca
from ostiary.core.jws import b64url
from ostiary.core.lifetime import parse_duration
from ostiary.signers.signing_keys import SIGNING_KEY_TYPES
from ostiary.store.signing_keys import kid_of

key_app = typer.Typer(
    help="Signing keys that sign client assertions for callers (remote signing).",
    no_args_is_help=True,
)

CertOut = Annotated[
    Path, typer.Option("--cert-out", help="Where to write the key's certificate (PEM).")
]
Lifetime = Annotated[
    str, typer.Option("--lifetime", help="Certificate lifetime (e.g. 365d, at most 1095d).")
]


@key_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Key name: a-z, 0-9, '-', '_'.")],
    cert_out: CertOut,
    key_type: Annotated[
        str, typer.Option("--type", help=f"One of {', '.join(SIGNING_KEY_TYPES)}.")
    ] = "rsa-2048",
    audience: Annotated[
        list[str] | None,
        typer.Option("--audience", help="Token endpoint an assertion may name (repeatable)."),
    ] = None,
    caller: Annotated[
        list[str] | None,
        typer.Option(
            "--caller",
            help="Who may use the key: KIND:GLOB with KIND one of cn, uri, dns, email, "
            "serial, admin (e.g. cn:app1, uri:spiffe://corp/*); a pattern without a kind is "
            "refused. Repeatable; default admin:* (admin tokens only).",
        ),
    ] = None,
    kms: Annotated[
        str | None,
        typer.Option(
            "--kms",
            help="Where the key lives: 'file' (encrypted in the CA folder) or 'pkcs11' (the "
            "CA's token; needs a CA made with --kms pkcs11). Default: the CA's own kind.",
            show_default=False,
        ),
    ] = None,
    lifetime: Lifetime = "365d",
    allow_digest_signing: Annotated[
        bool,
        typer.Option(
            "--allow-digest-signing",
            help="Also sign bare digests (POST .../sign). Off: assertions only, so the "
            "audience allowlist, lifetime and jti checks cannot be bypassed.",
        ),
    ] = False,
    force: Force = False,
    directory: CADir = None,
    password_file: PasswordFile = None,
) -> None:
    """Make a signing key and its certificate (the one to upload to the app registration)."""
    check_writable(cert_out, force=force)
    with unlock_ca(directory, password_file) as ca:
        version, certificate = create_signing_key(
            ca.authority,
            signing_key_store(ca.material, ca.password, kms=kms),
            name,
            key_type=key_type,
            audiences=audience or [],
            callers=caller or [],
            lifetime=parse_duration(lifetime),
            actor="cli",
            allow_digest_signing=allow_digest_signing,
        )
    write_file(cert_out, certificate.public_bytes(serialization.Encoding.PEM))
    _report(name, version.version, certificate, cert_out)


@key_app.command("rotate")
def rotate(
    name: Annotated[str, typer.Argument(help="The key to rotate.")],
    cert_out: CertOut,
    lifetime: Lifetime = "365d",
    force: Force = False,
    directory: CADir = None,
    password_file: PasswordFile = None,
) -> None:
    """Make the next version of a key: it signs every assertion from now on, at once.

    Upload the new certificate (--cert-out) to the app registration right away, next to the
    old one: until it is there, the identity provider refuses assertions signed by the new
    version. Remove the old certificate from the registration once the new one works.
    """
    check_writable(cert_out, force=force)
    with unlock_ca(directory, password_file) as ca:
        version, certificate = rotate_signing_key(
            ca.authority,
            signing_key_store(ca.material, ca.password),
            name,
            lifetime=parse_duration(lifetime),
            actor="cli",
        )
    write_file(cert_out, certificate.public_bytes(serialization.Encoding.PEM))
    _report(name, version.version, certificate, cert_out)


@key_app.command("update")
def update(
    name: Annotated[str, typer.Argument(help="The key to change.")],
    audience: Annotated[
        list[str] | None,
        typer.Option(
            "--audience",
            help="Token endpoints an assertion may name (repeatable; replaces the list).",
            show_default=False,
        ),
    ] = None,
    caller: Annotated[
        list[str] | None,
        typer.Option(
            "--caller",
            help="Who may use the key, as at create (repeatable; replaces the list).",
            show_default=False,
        ),
    ] = None,
    allow_digest_signing: Annotated[
        bool | None,
        typer.Option(
            "--allow-digest-signing/--no-allow-digest-signing",
            help="Also sign bare digests, or assertions only.",
            show_default=False,
        ),
    ] = None,
    directory: CADir = None,
    password_file: PasswordFile = None,
) -> None:
    """Change a key's audiences, callers or digest signing; its certificates stay as they are."""
    change = SigningKeyChange(audience, caller, allow_digest_signing)
    with unlock_ca(directory, password_file) as ca:
        now = update_signing_key(ca.authority, name, change, actor="cli")
    note(f"Updated signing key '{name}'")
    note(f"  audiences: {', '.join(now['audiences'])}")
    note(f"  callers:   {', '.join(now['callers'])}")
    note(f"  digests:   {'signed' if now['allow_digest_signing'] else 'refused'}")


@key_app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="The key to remove.")],
    directory: CADir = None,
    password_file: PasswordFile = None,
) -> None:
    """Remove a key: its certificates are revoked, its key files deleted; it signs no more."""
    with unlock_ca(directory, password_file) as ca:
        serials = remove_signing_key(
            ca.authority, signing_key_store(ca.material, ca.password), name, actor="cli"
        )
    note(f"Removed signing key '{name}'; revoked serial {', '.join(serials) or '(none)'}")


@key_app.command("list")
def list_keys(directory: CADir = None, password_file: NoPasswordFile = None) -> None:
    """Signing keys, their audiences, callers and versions (no key, no password needed)."""
    with open_ca_store(directory) as ca:
        keys = list_signing_keys(ca.store)
    if not keys:
        note("No signing keys.")
        return
    for key in keys:
        out.print(f"{shown(key.name)}  {shown(key.key_type)}  current v{key.current_version}")
        out.print(f"  audiences: {shown(', '.join(key.audiences))}")
        out.print(f"  callers:   {shown(', '.join(key.callers))}")
        out.print(f"  digests:   {'signed' if key.allow_digest_signing else 'refused'}")
        for number, backend, serial, created in key.versions:
            out.print(f"  v{number}  {backend}  serial {serial}  {created:%Y-%m-%d %H:%M}Z")


def _report(name: str, version: int, certificate: x509.Certificate, path: Path) -> None:
    der = certificate.public_bytes(serialization.Encoding.DER)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    note(f"Signing key {kid_of(name, version)}: certificate written to {path}")
    note(f"  x5t#S256: {b64url(digest.finalize())}")
    thumbprint = certificate.fingerprint(hashes.SHA1()).hex().upper()
    note(f"  SHA-1 thumbprint (Entra shows this): {thumbprint}")
    note(f"  not_after: {certificate.not_valid_after_utc:%Y-%m-%d %H:%M:%S}Z")


__all__ = ["key_app"]
