"""``ostiary cert request SUBJECT CRT KEY --acme DIRECTORY_URL``: the same request over ACME
(RFC 8555), answering http-01 here (see :mod:`ostiary.client.acme_order`).

With ``--key-store tpm`` the key is made in the TPM; with ``--attest-key``/``--attest-chain``
too, the order is for the device the AK's certificate names (a ``permanent-identifier``),
proved by device-attest-01 with the TPM's attestation of the new key
(:mod:`ostiary.client.acme_device`); SUBJECT, if given, is that identifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ostiary.cli.cert import dump_private_key
from ostiary.cli.console import note
from ostiary.cli.files import check_writable, write_file
from ostiary.client.enrollment import build_csr
from ostiary.core.errors import BadRequest
from ostiary.core.keys import KeyType, generate_private_key
from ostiary.core.names import common_name

if TYPE_CHECKING:
    from ostiary.client.acme_order import AcmeOrder

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


@dataclass(frozen=True)
class TpmKeyOptions:
    """``--key-store tpm``: where the TPM is, the new key's PIN, the AK that attests it."""

    tcti: str | None = None
    pin_file: Path | None = None
    no_pin: bool = False
    attest_key: Path | None = None
    attest_chain: Path | None = None


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
    tpm: TpmKeyOptions | None = None,
) -> None:
    """Make the key, order, answer http-01 (or device-attest-01), and write the certificate
    chain and the key.
    """
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
    ordered = None
    if tpm is not None:  # renewal over ACME takes file keys only (cert renew says so)
        chain, key_pem = _order_with_tpm(order, subject, names, tpm)
    else:
        key = generate_private_key(key_type)
        ordered = order_certificate(order, build_csr(subject, names, key))
        chain, key_pem = ordered.chain, dump_private_key(key, None)
    write_file(key_file, key_pem, private=True)
    write_file(crt, chain_pem(chain))
    note(f"Issued serial {chain[0].serial_number:x} to {chain[0].subject.rfc4514_string()}")
    note(f"Wrote {crt} and key {key_file}")
    if ordered is not None:
        enrollment = enrollment_file(crt)
        write_file(enrollment, AcmeEnrollment(order, ordered.account).dump_json(), private=True)
        note(f"Wrote {enrollment} (the ACME account): 'ostiary cert renew' renews over ACME")


def chain_pem(chain: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)


def _order_with_tpm(
    order: AcmeOrder,
    subject: x509.Name,
    names: list[x509.GeneralName],
    tpm: TpmKeyOptions,
) -> tuple[list[x509.Certificate], bytes]:
    """The chain for a new TPM key (attested when an AK is given), and the key's TSS2 PEM."""
    from ostiary.cli.tpm import attestation_key, new_key_pin, tpm_tcti
    from ostiary.client.acme_device import device_identifiers, order_attested_certificate
    from ostiary.client.acme_order import order_certificate
    from ostiary.client.tpm import create_tpm_key

    reach = tpm_tcti(tpm.tcti)
    ak = attestation_key(tpm.attest_key, tpm.attest_chain, tcti=reach)
    if ak is None:
        pin = new_key_pin(tpm.pin_file, no_pin=tpm.no_pin)
        key = create_tpm_key(tcti=reach, pin=pin)
        return order_certificate(order, build_csr(subject, names, key)).chain, key.to_pem()
    if names:
        raise BadRequest("an attested device order names the device only: drop --san")
    named = device_identifiers(ak)
    wanted = common_name(subject)
    if wanted is None:
        if len(named) != 1:
            raise BadRequest(
                f"the attestation key's certificate names {len(named)} devices: give SUBJECT, "
                "the permanent identifier to order"
            )
        wanted = named[0]
    pin = new_key_pin(tpm.pin_file, no_pin=tpm.no_pin)
    key = create_tpm_key(tcti=reach, pin=pin)
    return order_attested_certificate(order, wanted, key, ak), key.to_pem()


__all__ = [
    "AcmeDirectory",
    "AcmeProfile",
    "EabHmacFile",
    "EabKid",
    "Http01Address",
    "Http01Port",
    "TpmKeyOptions",
    "chain_pem",
    "request_over_acme",
]
