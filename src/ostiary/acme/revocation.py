"""revokeCert (RFC 8555 section 7.6): by an account, or by the certificate's own key.

Signed with ``kid``, the account must hold valid authorizations for every name in the
certificate (or be the account whose order got it). Signed with ``jwk``, that key must be
the certificate's. The revocation goes through the Authority, so OCSP, the CRL and the
revocation feed show it at once.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from http import HTTPStatus

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from joserfc.jwk import OctKey
from sqlalchemy import select

from ostiary.acme.accounts import Authenticated
from ostiary.acme.errors import AcmeProblem, malformed, unauthorized
from ostiary.acme.resources import Answer
from ostiary.authority.authority import Authority
from ostiary.core.errors import AlreadyRevoked, NotFound
from ostiary.core.names import sans_of
from ostiary.store import AcmeOrder, AcmeRepository, CertificateRepository
from ostiary.store.certificates import issuer_key_id_of

#: RFC 5280 reason codes ACME accepts (section 7.6); 7 is unused.
_REASONS = {
    0: x509.ReasonFlags.unspecified,
    1: x509.ReasonFlags.key_compromise,
    3: x509.ReasonFlags.affiliation_changed,
    4: x509.ReasonFlags.superseded,
    5: x509.ReasonFlags.cessation_of_operation,
    6: x509.ReasonFlags.certificate_hold,
    8: x509.ReasonFlags.remove_from_crl,
    9: x509.ReasonFlags.privilege_withdrawn,
}


def revoke_certificate(
    authority: Authority, provisioner: str, auth: Authenticated, *, now: datetime
) -> Answer:
    payload = auth.payload or {}
    certificate = _certificate(payload.get("certificate"))
    reason_code = payload.get("reason", 0)
    if (
        not isinstance(reason_code, int)
        or isinstance(reason_code, bool)
        or reason_code not in _REASONS
    ):
        raise AcmeProblem("badRevocationReason", f"reason {reason_code!r} is not accepted")
    serial = certificate.serial_number
    issuer_key_id = issuer_key_id_of(certificate)  # MalformedInput without an AKI
    with authority.store.transaction(read_only=True) as session:
        try:
            record = CertificateRepository(session).get(serial, issuer_key_id)
        except NotFound:
            raise AcmeProblem(
                "malformed", "this CA did not issue that certificate", status=HTTPStatus.NOT_FOUND
            ) from None
        if record.der != certificate.public_bytes(serialization.Encoding.DER):
            raise malformed("this CA did not issue that certificate")
        if auth.account is None:
            _check_own_key(auth, certificate)
        else:
            ordered_by = session.scalars(
                select(AcmeOrder.account_id).where(AcmeOrder.serial == f"{serial:x}")
            ).first()
            if ordered_by != auth.account.id:
                _check_authorized_names(AcmeRepository(session), auth.account.id, certificate, now)
    try:
        authority.revoke(serial, reason=_REASONS[reason_code], actor=_actor(auth))
    except AlreadyRevoked:
        raise AcmeProblem("alreadyRevoked", "the certificate is revoked already") from None
    return Answer(200)


def _actor(auth: Authenticated) -> str:
    return f"acme:{auth.account.id}" if auth.account is not None else "acme:certificate-key"


def _certificate(value: object) -> x509.Certificate:
    if not isinstance(value, str) or not value:
        raise malformed("revokeCert needs 'certificate': the DER certificate, base64url")
    try:
        return x509.load_der_x509_certificate(
            base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        )
    except (binascii.Error, ValueError):
        raise malformed("the certificate cannot be parsed (DER, base64url)") from None


def _check_own_key(auth: Authenticated, certificate: x509.Certificate) -> None:
    if isinstance(auth.key, OctKey):  # pragma: no cover - refused as an account key already
        raise unauthorized("a MAC key cannot sign for a certificate")
    signer = serialization.load_pem_public_key(auth.key.as_pem(private=False))
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if signer.public_bytes(der, spki) != certificate.public_key().public_bytes(der, spki):
        raise unauthorized(
            "the request is signed neither by an account nor by the certificate's key"
        )


def _check_authorized_names(
    repository: AcmeRepository, account_id: str, certificate: x509.Certificate, now: datetime
) -> None:
    held = {
        ("dns" if a.identifier_type == "dns" else a.identifier_type, a.identifier_value)
        for a in repository.valid_authorizations(account_id, now=now)
    }
    for name in sans_of(certificate.extensions):
        if isinstance(name, x509.DNSName):
            wanted = ("dns", name.value.lower().removeprefix("*."))
        elif isinstance(name, x509.IPAddress):
            wanted = ("ip", str(name.value))
        else:
            raise unauthorized("this account may not revoke a certificate with that kind of name")
        if wanted not in held:
            raise unauthorized(
                f"this account holds no valid authorization for {wanted[1]}: it may not revoke"
            )


__all__ = ["revoke_certificate"]
