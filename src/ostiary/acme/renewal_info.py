"""ACME Renewal Information (RFC 9773): the ``renewalInfo`` resource and ``replaces``.

A certificate is named by its certID: base64url of its authority key identifier's
keyIdentifier, ``.``, base64url of its serial number's DER content octets (section 4.1).
``GET renewalInfo/<certID>`` answers the suggested window (:mod:`ostiary.provisioners.
acme_renewal` decides it) with ``Retry-After``. A newOrder's ``replaces`` names the
certificate the order renews (section 5): it must be one this account was issued, for at
least one of the same identifiers, and not replaced already (``alreadyReplaced``); finalize
records it as the new certificate's lineage (``renewed_from``), whose unique key also
settles two orders racing on different replicas.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from http import HTTPStatus

from sqlalchemy import select

from ostiary.acme.errors import AcmeProblem, malformed, unauthorized
from ostiary.acme.resources import Answer, rfc3339
from ostiary.core.encoding import ari_cert_id, serial_hex
from ostiary.core.errors import NotFound
from ostiary.provisioners.acme_renewal import RENEWAL_INFO_RETRY, renewal_window
from ostiary.store import AcmeOrder, CertificateRepository, Store

_B64URL = re.compile(r"[A-Za-z0-9_-]+")


def already_replaced(detail: str) -> AcmeProblem:
    return AcmeProblem("alreadyReplaced", detail, status=HTTPStatus.CONFLICT)


def parse_cert_id(cert_id: str) -> tuple[str, int]:
    """The issuer key id (hex) and the serial a certID names; ``malformed`` otherwise."""
    key_part, dot, serial_part = cert_id.partition(".")
    if not dot or not _B64URL.fullmatch(key_part) or not _B64URL.fullmatch(serial_part):
        raise malformed("a certID is base64url(keyIdentifier) '.' base64url(serial), unpadded")
    try:
        key_id = _decode(key_part)
        serial = _decode(serial_part)
    except (binascii.Error, ValueError):
        raise malformed("the certID is not base64url") from None
    if not key_id or not serial or serial[0] & 0x80 or len(serial) > 21:
        raise malformed("the certID's serial is not a positive DER INTEGER of 20 octets at most")
    return key_id.hex(), int.from_bytes(serial, "big")


def cert_id_of(issuer_key_id: str, serial: int) -> str:
    """The certID of the certificate with ``serial`` issued under ``issuer_key_id``."""
    return ari_cert_id(bytes.fromhex(issuer_key_id), serial)


def renewal_info(store: Store, provisioner: str, cert_id: str, *, now: datetime) -> Answer:
    """``GET renewalInfo/<certID>``: the suggested window, and when to ask again."""
    issuer_key_id, serial = parse_cert_id(cert_id)
    try:
        window = renewal_window(store, provisioner, serial, issuer_key_id, now=now)
    except NotFound as exc:
        raise AcmeProblem("malformed", exc.detail, status=HTTPStatus.NOT_FOUND) from None
    body = {"suggestedWindow": {"start": rfc3339(window.start), "end": rfc3339(window.end)}}
    retry = str(int(RENEWAL_INFO_RETRY.total_seconds()))
    return Answer(200, body, {"Retry-After": retry})


def check_replaces(
    store: Store,
    provisioner: str,
    account_id: str,
    value: object,
    identifiers: Sequence[Mapping[str, str]],
    *,
    now: datetime,
) -> str | None:
    """The canonical certID a newOrder's ``replaces`` names, after the section 5 checks."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise malformed("'replaces' must be a certID string")
    issuer_key_id, serial = parse_cert_id(value)
    cert_id = cert_id_of(issuer_key_id, serial)
    with store.transaction(read_only=True) as session:
        try:
            record = CertificateRepository(session).get(serial, issuer_key_id)
        except NotFound:
            raise malformed("'replaces' names no certificate of this CA") from None
        issued_by = session.scalars(
            select(AcmeOrder).where(
                AcmeOrder.serial == serial_hex(serial), AcmeOrder.provisioner == provisioner
            )
        ).first()
        if issued_by is None or issued_by.account_id != account_id:
            raise unauthorized("'replaces' names a certificate this account was not issued")
        old = {(i["type"], i["value"]) for i in issued_by.identifiers}
        if not old & {(i["type"], i["value"]) for i in identifiers}:
            raise malformed("'replaces' names a certificate for none of these identifiers")
        if CertificateRepository(session).successor_of(record) is not None:
            raise already_replaced(f"certificate {serial_hex(serial)} was replaced already")
        rivals = session.execute(
            select(AcmeOrder.status, AcmeOrder.expires_at).where(AcmeOrder.replaces == cert_id)
        ).all()
        for status, expires_at in rivals:
            if status in ("valid", "processing") or (status != "invalid" and expires_at > now):
                raise already_replaced(
                    f"another order replaces certificate {serial_hex(serial)} already"
                )
    return cert_id


def replaced_serial(cert_id: str) -> int:
    """The serial of the certificate a stored ``replaces`` names."""
    return parse_cert_id(cert_id)[1]


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


__all__ = [
    "already_replaced",
    "cert_id_of",
    "check_replaces",
    "parse_cert_id",
    "renewal_info",
    "replaced_serial",
]
