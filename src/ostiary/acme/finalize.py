"""Finalize and the certificate download (RFC 8555 section 7.4, 7.4.2).

Finalize checks that the order is ``ready`` and that the CSR names exactly the order's
identifiers (and, after device-attest-01, holds the attested key), then issues through the
Authority; the issuance's own transaction moves the order from ``ready`` to ``valid`` with
the serial by one conditional ``UPDATE`` (of two finalize requests, or replicas, one
issues). The order and its authorizations, and at the download the order and its
certificate, are read in Core (:mod:`ostiary.store.acme_reads`).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from http import HTTPStatus
from types import SimpleNamespace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ostiary.acme.accounts import Authenticated
from ostiary.acme.errors import AcmeProblem, malformed, unauthorized
from ostiary.acme.renewal_info import already_replaced, replaced_serial
from ostiary.acme.resources import Answer, Urls, order_json, order_status
from ostiary.authority.authority import Authority
from ostiary.core.errors import BadRequest, NotFound, Superseded
from ostiary.core.names import (
    PERMANENT_IDENTIFIER_OID,
    canonical_general_name,
    common_name,
    decode_other_name,
    sans_of,
)
from ostiary.provisioners.acme import AcmeProvisioner
from ostiary.provisioners.enrollment import client_id_names
from ostiary.store.acme_reads import order_certificate, order_with_full_authorizations
from ostiary.store.acme_writes import mark_order_issued
from ostiary.store.group_commit import Batch


def finalize(
    authority: Authority,
    urls: Urls,
    provisioner: AcmeProvisioner,
    order_id: str,
    auth: Authenticated,
    *,
    now: datetime,
) -> Answer:
    """Finalize (section 7.4): the CSR must name exactly the order's identifiers."""
    payload = auth.payload or {}
    csr = _csr(payload.get("csr"))
    found = order_with_full_authorizations(authority.store.read_engine, order_id)
    if found is None or found[0].provisioner != provisioner.name:
        raise NotFound(f"no order {order_id[:40]!r}")
    if found[0].account_id != auth.account_id:
        raise unauthorized("this order belongs to another account")
    order: Any = SimpleNamespace(**found[0]._asdict())
    authorizations = found[1]
    status = order_status(order, now=now)
    if status != "ready":
        raise AcmeProblem(
            "orderNotReady",
            f"the order is {status}, not ready: every authorization must be valid first",
            status=HTTPStatus.FORBIDDEN,
        )
    bound = None
    if any(a.identifier_type == "permanent-identifier" for a in authorizations):
        # a ClientIdentifier is spent only for such an authorization (start_challenge)
        with authority.store.transaction(read_only=True) as session:
            bound = client_id_names(session, provisioner.name, order.id)
    if bound is None:
        _check_csr_names(csr, order.identifiers)
    attested = {a.attested_spki for a in authorizations if a.attested_spki is not None}
    if attested:
        spki = csr.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if attested != {spki}:
            raise AcmeProblem("badCSR", "the CSR's key is not the key the device attested")
    authorization = provisioner.authorize_order(
        order.identifiers,
        profile=order.profile,
        not_after=order.not_after,
        hardware_key=bool(attested) and all(a.hardware_key for a in authorizations),
        bound_names=bound,
    )
    serial: list[str] = []

    def mark_issued(batch: Batch, certificate: x509.Certificate) -> None:
        # In the issuance's transaction: the request's nonce is spent, and one finalize of
        # an order records a certificate.
        auth.nonce.spend_in(batch)
        serial[:] = [f"{certificate.serial_number:x}"]
        if not mark_order_issued(batch, order.id, serial[0]):
            raise AcmeProblem(
                "orderNotReady", "the order was finalized meanwhile", status=HTTPStatus.FORBIDDEN
            )

    renewed_from = replaced_serial(order.replaces) if order.replaces is not None else None
    try:
        authority.issue(
            csr,
            authorization,
            actor=f"acme:{auth.account_id}",
            details={"acme_order": order.id},
            renewed_from=renewed_from,
            then=mark_issued,
        )
    except Superseded as exc:  # another order replaced it first (any replica)
        raise already_replaced(exc.detail) from None
    auth.nonce.committed()
    order.status, order.serial = "valid", serial[0]
    body = order_json(urls, order, authorizations, now=now)
    return Answer(200, body, {"Location": urls.resource("order", order.id)})


def certificate_chain(
    authority: Authority,
    provisioner: str,
    order_id: str,
    auth: Authenticated,
    chain_pem: Callable[[x509.Certificate], tuple[str, ...]],
) -> Answer:
    """The issued certificate and the issuing CA, PEM (section 7.4.2); ``chain_pem`` gives
    the issuing CA of a certificate (the intermediate that issued it, after a rotation too).
    """
    issuers = sorted(authority.issuers, key=lambda k: k != authority.issuer_key_id)
    found = auth.nonce.write(
        lambda batch: order_certificate(batch.connection, order_id, issuers)
    )  # read in the unit that spends the request's nonce
    if found is None or found[0].provisioner != provisioner:
        raise NotFound(f"no order {order_id[:40]!r}")
    order, der = found
    if order.account_id != auth.account_id:
        raise unauthorized("this order belongs to another account")
    if order.serial is None:
        raise AcmeProblem(
            "malformed", "the order has no certificate yet", status=HTTPStatus.NOT_FOUND
        )
    if der is None:  # pragma: no cover - finalize records both in one transaction
        raise NotFound(f"no certificate with serial {order.serial}", serial=order.serial)
    certificate = x509.load_der_x509_certificate(der)
    leaf = certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return Answer(200, leaf + "".join(chain_pem(certificate)))


def _csr(value: object) -> x509.CertificateSigningRequest:
    if not isinstance(value, str) or not value:
        raise malformed("finalize needs 'csr': the DER CSR, base64url")
    try:
        der = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        return x509.load_der_x509_csr(der)
    except (binascii.Error, ValueError):
        raise AcmeProblem("badCSR", "the CSR cannot be parsed (DER, base64url)") from None


def _check_csr_names(
    csr: x509.CertificateSigningRequest, identifiers: Sequence[Mapping[str, Any]]
) -> None:
    """The CSR's names (SANs, and a CN folded in) must be exactly the order's identifiers."""
    try:
        sans = sans_of(csr.extensions)
        cn = common_name(csr.subject)
    except (ValueError, x509.DuplicateExtension, BadRequest) as exc:
        raise AcmeProblem("badCSR", f"the CSR's names cannot be read: {exc}") from None
    asked: set[tuple[str, str]] = set()
    for name in sans:
        asked.add(_identifier_of(canonical_general_name(name)))
    if cn is not None:
        try:
            asked.add(("ip", str(ipaddress.ip_address(cn))))
        except ValueError:
            asked.add(("dns", cn.lower()))
    ordered = {(str(i["type"]), str(i["value"])) for i in identifiers}
    ordered_names = {k for k in ordered if k[0] in ("dns", "ip")}
    extra = asked - ordered
    missing = ordered_names - asked
    if extra or missing:
        parts = []
        if extra:
            parts.append("not ordered: " + ", ".join(sorted(v for _, v in extra)))
        if missing:
            parts.append("missing: " + ", ".join(sorted(v for _, v in missing)))
        raise AcmeProblem("badCSR", "the CSR's names differ from the order's: " + "; ".join(parts))


def _identifier_of(name: x509.GeneralName) -> tuple[str, str]:
    if isinstance(name, x509.DNSName):
        return ("dns", name.value.lower())
    if isinstance(name, x509.IPAddress):
        return ("ip", str(name.value))
    if isinstance(name, x509.OtherName) and name.type_id == PERMANENT_IDENTIFIER_OID:
        return ("permanent-identifier", decode_other_name(name) or "")
    raise AcmeProblem("badCSR", "the CSR may carry DNS, IP and permanent-identifier names only")


__all__ = ["certificate_chain", "finalize"]
