"""``ostiary cert request SUBJECT CRT KEY --acme DIRECTORY_URL``: the same request over ACME
(RFC 8555), answering http-01 here (see :mod:`ostiary.client.acme_order`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ostiary.cli.cert import dump_private_key
from ostiary.cli.console import note
from ostiary.cli.files import check_writable, write_file
from ostiary.client.enrollment import build_csr
from ostiary.core.errors import BadRequest
from ostiary.core.keys import KeyType, generate_private_key

AcmeDirectory = Annotated[
    str | None,
    typer.Option(
        "--acme",
        help="Order over ACME from this directory URL (http-01 answered here; "
        "--root trusts the server's TLS root).",
        show_default=False,
    ),
]
AcmeProfile = Annotated[
    str | None,
    typer.Option("--profile", help="acme: the ACME profile to order.", show_default=False),
]
EabKid = Annotated[
    str | None,
    typer.Option("--eab-kid", help="acme: External Account Binding key id.", show_default=False),
]
EabHmacFile = Annotated[
    Path | None,
    typer.Option(
        "--eab-hmac-file",
        help="acme: the file holding the EAB HMAC key (base64url).",
        show_default=False,
    ),
]
Http01Port = Annotated[
    int,
    typer.Option("--http-01-port", min=1, max=65535, help="acme: where http-01 is answered."),
]
Http01Address = Annotated[
    str,
    typer.Option("--http-01-address", help="acme: the address http-01 listens on (all)."),
]


def request_over_acme(
    directory_url: str,
    subject: x509.Name,
    names: list[x509.GeneralName],
    crt: Path,
    key_file: Path,
    *,
    key_type: KeyType,
    root: Path | None,
    profile: str | None,
    eab_kid: str | None,
    eab_hmac_file: Path | None,
    http01_port: int,
    http01_address: str,
    force: bool,
) -> None:
    """Make the key, order, answer http-01, and write the certificate chain and the key."""
    from ostiary.client.acme_order import AcmeOrder, ExternalAccount, order_certificate
    from ostiary.client.acme_renewal import AcmeEnrollment, enrollment_file

    if (eab_kid is None) != (eab_hmac_file is None):
        raise BadRequest("External Account Binding needs both --eab-kid and --eab-hmac-file")
    if not directory_url.startswith("https://"):
        raise BadRequest("--acme must be the https:// URL of the ACME directory")
    check_writable(crt, key_file, force=force)
    account = None
    if eab_kid is not None and eab_hmac_file is not None:
        account = ExternalAccount.from_file(eab_kid, eab_hmac_file)
    order = AcmeOrder(
        directory_url,
        root_file=root,
        profile=profile,
        external_account=account,
        http01_address=http01_address,
        http01_port=http01_port,
    )
    key = generate_private_key(key_type)
    ordered = order_certificate(order, build_csr(subject, names, key))
    chain = ordered.chain
    write_file(key_file, dump_private_key(key, None), private=True)
    write_file(crt, chain_pem(chain))
    enrollment = enrollment_file(crt)
    write_file(enrollment, AcmeEnrollment(order, ordered.account).dump_json(), private=True)
    note(f"Issued serial {chain[0].serial_number:x} to {chain[0].subject.rfc4514_string()}")
    note(f"Wrote {crt} and key {key_file}")
    note(f"Wrote {enrollment} (the ACME account): 'ostiary cert renew' renews over ACME")


def chain_pem(chain: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)


__all__ = [
    "AcmeDirectory",
    "AcmeProfile",
    "EabHmacFile",
    "EabKid",
    "Http01Address",
    "Http01Port",
    "chain_pem",
    "request_over_acme",
]
