"""Renewal over ACME of a certificate that ``cert request --acme`` enrolled (RFC 9773).

``cert request --acme`` keeps ``CRT.acme.json`` (0600) beside the certificate: the
directory, the TLS root it trusted, the profile, the http-01 listener, and the account (its
key and URL). ``cert renew`` and the renew daemon find it and renew over ACME with that
account, sending ``replaces`` with the certificate's certID, so that the CA records the new
certificate as the old one's successor. When the directory offers ``renewalInfo``, the
certificate is due at the start of the CA's suggested window, or by the usual
remaining-lifetime rule if that comes first; when the CA cannot be asked, by the usual rule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ostiary.client.renewal import Log, RenewalPolicy
from ostiary.core.encoding import ari_cert_id
from ostiary.core.errors import BadRequest, OstiaryError

if TYPE_CHECKING:  # the acme library is imported when a certificate has an enrollment
    from ostiary.client.acme_order import AcmeAccountKey, AcmeOrder

#: The enrollment file's name is the certificate's with this added.
ENROLLMENT_SUFFIX = ".acme.json"


def enrollment_file(certificate: Path) -> Path:
    return certificate.with_name(certificate.name + ENROLLMENT_SUFFIX)


@dataclass(frozen=True)
class AcmeEnrollment:
    """Where a certificate was ordered, and by which account: what renewal needs."""

    order: AcmeOrder
    account: AcmeAccountKey

    def dump_json(self) -> bytes:
        """The file's contents (it holds the account's private key: write it 0600)."""
        key = self.account.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        document = {
            "directory": self.order.directory_url,
            "root": str(self.order.root_file.resolve()) if self.order.root_file else None,
            "profile": self.order.profile,
            "http01_address": self.order.http01_address,
            "http01_port": self.order.http01_port,
            "account": self.account.url,
            "account_key": key.decode("ascii"),
        }
        return json.dumps(document, indent=1).encode("utf-8") + b"\n"

    @classmethod
    def load(cls, path: Path) -> AcmeEnrollment:
        from ostiary.client.acme_order import AcmeAccountKey, AcmeOrder

        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            key = serialization.load_pem_private_key(document["account_key"].encode(), None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError("not an EC key")
            order = AcmeOrder(
                str(document["directory"]),
                root_file=Path(document["root"]) if document.get("root") else None,
                profile=document.get("profile"),
                http01_address=str(document.get("http01_address", "")),
                http01_port=int(document.get("http01_port", 80)),
            )
            return cls(order, AcmeAccountKey(key, str(document["account"])))
        except OSError as exc:
            raise BadRequest(f"cannot read {path}: {exc.strerror}") from None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise BadRequest(f"{path} is not an ACME enrollment file") from None


def cert_id_of(certificate: x509.Certificate) -> str:
    """RFC 9773 section 4.1: base64url(AKI keyIdentifier) '.' base64url(serial DER octets)."""
    try:
        aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        aki = None
    if aki is None or aki.key_identifier is None:
        raise BadRequest("the certificate has no authority key identifier: it has no certID")
    return ari_cert_id(aki.key_identifier, certificate.serial_number)


@dataclass(frozen=True)
class FollowRenewalInfo:
    """Due at the CA's suggested window (RFC 9773), or by ``fallback`` if that is earlier."""

    enrollment: AcmeEnrollment
    fallback: RenewalPolicy
    log: Log

    def window(self, certificate: x509.Certificate) -> tuple[datetime, datetime] | None:
        from ostiary.client.acme_order import fetch_renewal_window

        try:
            return fetch_renewal_window(self.enrollment.order, certificate, cert_id_of(certificate))
        except OstiaryError as exc:
            self.log(f"no renewal information ({exc.detail}): the usual rule applies")
            return None

    def certificate_due_at(self, certificate: x509.Certificate) -> datetime:
        usual = self.fallback.certificate_due_at(certificate)
        window = self.window(certificate)
        return usual if window is None else min(usual, window[0])

    def needs_renewal(self, certificate: x509.Certificate, *, now: datetime) -> bool:
        return now >= self.certificate_due_at(certificate)

    def describe(self) -> str:
        return f"at the CA's renewal window (RFC 9773), else {self.fallback.describe()}"


__all__ = [
    "ENROLLMENT_SUFFIX",
    "AcmeEnrollment",
    "FollowRenewalInfo",
    "cert_id_of",
    "enrollment_file",
]
