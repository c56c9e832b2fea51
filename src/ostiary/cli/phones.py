"""Phones: ``ca acme client-id``, ``ca enroll-code`` and ``ca enroll-profile apple``
(docs/phones.md).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from ostiary.cli.console import note, out
from ostiary.cli.files import check_writable, read_input, write_file
from ostiary.cli.options import CADir, PasswordFile, Sans
from ostiary.cli.unlock import open_ca_store, unlock_ca
from ostiary.config import CAConfig, published_base_url
from ostiary.core.encoding import load_certificate_chain
from ostiary.core.errors import BadRequest
from ostiary.core.lifetime import parse_duration

_ACTOR = "cli"

profile_app = typer.Typer(help="Configuration profiles for phones and MDMs.", no_args_is_help=True)

Provisioner = Annotated[
    str, typer.Option("--provisioner", help="The scep or acme provisioner phones enroll with.")
]
Subject = Annotated[
    str, typer.Option("--subject", help="The certificate's subject (CN=... or a bare CN).")
]


def client_id(
    provisioner: Annotated[
        str, typer.Option("--provisioner", help="The acme provisioner (device-attest-01).")
    ],
    subject: Subject,
    san: Sans = None,
    ttl: Annotated[str, typer.Option("--ttl", help="How long it may be used (1m-30d).")] = "1d",
    directory: CADir = None,
) -> None:
    """A one-time ClientIdentifier for an Apple ACME payload, bound to these names.

    The device sends it as its permanent identifier; the certificate carries the names
    given here. Prints it on stdout.
    """
    from ostiary.provisioners.enrollment import load_target, make_client_id

    with open_ca_store(directory) as ca:
        made = make_client_id(
            ca.store, load_target(ca.store, provisioner), subject=subject,
            sans=tuple(san or ()), ttl=parse_duration(ttl), now=datetime.now(UTC), actor=_ACTOR,
        )  # fmt: skip
    note(f"One-time ClientIdentifier for {made.subject} {' '.join(made.sans)}".rstrip())
    note(f"  valid until {made.expires_at:%Y-%m-%d %H:%M:%SZ}, for one order")
    out.print(made.value, markup=False, highlight=False)


def enroll_code(
    provisioner: Provisioner,
    subject: Subject,
    san: Sans = None,
    ttl: Annotated[str, typer.Option("--ttl", help="How long it may be used (1m-30d).")] = "1d",
    directory: CADir = None,
) -> None:
    """A one-time code a person types on the /enroll page to get a phone profile.

    The profile is for these names, through PROVISIONER (scep or acme). Prints the code.
    """
    from ostiary.provisioners.enrollment import format_code, load_target, make_enroll_code

    with open_ca_store(directory) as ca:
        made = make_enroll_code(
            ca.store, load_target(ca.store, provisioner), subject=subject,
            sans=tuple(san or ()), ttl=parse_duration(ttl), now=datetime.now(UTC), actor=_ACTOR,
        )  # fmt: skip
    note(f"Enrollment code for {made.subject} {' '.join(made.sans)}".rstrip())
    note(f"  valid until {made.expires_at:%Y-%m-%d %H:%M:%SZ}, once, at https://<ca server>/enroll")
    out.print(format_code(made.value), markup=False, highlight=False)


@profile_app.command("apple")
def apple(
    provisioner: Provisioner,
    out_file: Annotated[Path, typer.Option("--out", help="Where to write the .mobileconfig.")],
    subject: Subject,
    san: Sans = None,
    acme: Annotated[
        bool, typer.Option("--acme", help="Require the ACME payload (an acme provisioner).")
    ] = False,
    sign_cert: Annotated[
        Path | None, typer.Option("--sign-cert", help="Sign with this certificate (PEM, chain).")
    ] = None,
    sign_key: Annotated[
        Path | None, typer.Option("--sign-key", help="Its private key (PEM, unencrypted).")
    ] = None,
    exchange_host: Annotated[
        str | None,
        typer.Option("--exchange-host", help="Add an Exchange ActiveSync account on this host."),
    ] = None,
    ca_url: Annotated[
        str | None,
        typer.Option(
            "--ca-url", help="The CA's HTTPS URL (ACME DirectoryURL); default from config."
        ),
    ] = None,
    ttl: Annotated[
        str, typer.Option("--ttl", help="How long its one-time secret may wait (1m-30d).")
    ] = "7d",
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out.")] = False,
    directory: CADir = None,
    password_file: PasswordFile = None,
) -> None:
    """A signed Apple configuration profile for one person's device, for an MDM to push.

    It holds the root CA, a SCEP payload (RSA 2048, a one-time challenge bound to SUBJECT
    and the SANs) or, for an acme provisioner with device-attest-01, an ACME payload (a
    Secure Enclave key, attested, a one-time ClientIdentifier). Signed by a certificate
    issued now for the purpose (profile-signing, 30 days) unless --sign-cert/--sign-key.
    """
    from ostiary.provisioners.enrollment import load_target
    from ostiary.provisioners.phone_profile import (
        ProfileSigner,
        issue_profile_signer,
        make_phone_profile,
    )

    check_writable(out_file, force=force)
    if (sign_cert is None) != (sign_key is None):
        raise BadRequest("--sign-cert and --sign-key go together")
    signer = None
    if sign_cert is not None and sign_key is not None:
        chain = load_certificate_chain(read_input(sign_cert, "signing certificate"))
        signer = ProfileSigner(chain[0], _load_key(sign_key), tuple(chain[1:]))
    with unlock_ca(directory, password_file) as ca:
        target = load_target(ca.store, provisioner)
        if acme and target.kind != "acme":
            raise BadRequest(f"--acme needs an acme provisioner; {provisioner!r} is {target.kind}")
        authority = ca.authority
        if signer is None:
            signer = issue_profile_signer(authority, actor=_ACTOR)
        config = ca.material.config
        made = make_phone_profile(
            authority, target, subject=subject, sans=tuple(san or ()),
            scep_base_url=_scep_base(config), https_base_url=ca_url or _https_base(config),
            signer=signer, now=datetime.now(UTC), actor=_ACTOR, ttl=parse_duration(ttl),
            exchange_host=exchange_host,
        )  # fmt: skip
    write_file(out_file, made.data)
    what = "SCEP challenge" if made.kind == "scep" else "ACME ClientIdentifier"
    note(f"Wrote {out_file}: {made.subject} {' '.join(made.sans)}".rstrip())
    note(f"  one-time {what}, valid until {made.expires_at:%Y-%m-%d %H:%M:%SZ}")
    note(f"  signed by {signer.certificate.subject.rfc4514_string()}")


def _load_key(path: Path) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    data = read_input(path, "signing key")
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:
        raise BadRequest(f"the signing key {path} is encrypted: give it unencrypted") from None
    except ValueError:
        raise BadRequest(f"the signing key {path} is not a PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise BadRequest("the signing key must be RSA or EC")
    return key


def _scep_base(config: CAConfig) -> str:
    """Where SCEP is served over plain HTTP: the configured URL, else the default listener."""
    return published_base_url(config)


def _https_base(config: CAConfig) -> str:
    host, _, port = config.address.rpartition(":")
    if config.dns:
        host = config.dns[0]
    return f"https://{host}:{port}"
