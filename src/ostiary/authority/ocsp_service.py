"""The CA server's OCSP responder: a delegated responder certificate and the store's answers.

Responses (RFC 6960) are signed by a delegated responder (RFC 6960 section 4.2.2.2): a
short-lived ``ocsp``-profile certificate (OCSPSigning, id-pkix-ocsp-nocheck) that this replica
issues itself at start through the Authority and renews at two thirds of its lifetime
(:class:`~ostiary.authority.self_issued.RenewingCertificate`), so the intermediate's key signs
one certificate a day instead of every response.

Every request reads the certificate's status from the store (one indexed lookup), so a
revocation recorded on any replica shows in the very next response. What is saved is the
signing: a response to a request without a nonce is reused for a quarter of its validity as
long as the status it states is still the status in the store (the status is part of
the cache key of :class:`ostiary.core.ocsp.OcspResponder`); a request with a nonce (RFC 9654)
is always signed afresh, with the nonce echoed. When the store cannot be reached the answer
is the unsigned ``tryLater`` status (RFC 6960 section 2.3), not an HTTP error.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from cryptography import x509
from cryptography.x509 import ocsp
from sqlalchemy.exc import DBAPIError

from ostiary.authority.authority import Authority
from ostiary.authority.self_issued import RenewingCertificate, SelfIssued, SelfIssuedSpec
from ostiary.core.errors import MalformedInput
from ostiary.core.ocsp import (
    CertStatus,
    OcspResponder,
    build_unsuccessful_response,
    ocsp_request_from_get_path,
)
from ostiary.store import CertificateRepository, CertificateStatus

#: Lifetime of the delegated responder certificate.
RESPONDER_LIFETIME = timedelta(hours=24)
#: Share of a response's validity during which it is reused (for requests without a nonce).
REUSE_SHARE = 0.25

logger = logging.getLogger("ostiary.ocsp")


class _StoreUnavailable(Exception):
    """The store could not answer a status lookup."""


def responder_spec(authority: Authority) -> SelfIssuedSpec:
    """The delegated responder certificate this CA server issues itself."""
    name = authority.ca.config.name
    return SelfIssuedSpec(
        purpose="ocsp-responder",
        subject=x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, f"{name} OCSP Responder")]),
        names=(),
        profile="ocsp",
        lifetime=RESPONDER_LIFETIME,
    )


class OcspService:
    """Answers OCSP requests about the authority's issuing CA (thread-safe)."""

    def __init__(self, authority: Authority, *, cache_size: int = 65536) -> None:
        self._authority = authority
        self._certificate = RenewingCertificate(authority, responder_spec(authority))
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._responder: tuple[SelfIssued, OcspResponder] | None = None
        self._ca_responder: OcspResponder | None = None  # kms = "pkcs11": see _in_use()

    @property
    def responder_certificate(self) -> x509.Certificate:
        """The delegated responder certificate in use (issued now if there is none yet);
        for a PKCS#11 CA, the issuing CA certificate.
        """
        if self._authority.ca.config.kms == "pkcs11":
            return self._authority.issuer.certificate
        return self._current()[0].certificate

    def respond(self, request_der: bytes) -> bytes:
        """The DER ``OCSPResponse`` for a DER request (POST)."""
        authority = self._authority
        responder = self._in_use()
        try:
            return responder.respond(request_der, lookup=self._lookup, now=authority.clock())
        except _StoreUnavailable:
            return build_unsuccessful_response(ocsp.OCSPResponseStatus.TRY_LATER)

    def respond_to_get(self, path: str) -> bytes:
        """The response for the GET form; a path that is not base64 is a malformed request."""
        try:
            request_der = ocsp_request_from_get_path(path)
        except MalformedInput:
            return build_unsuccessful_response(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        return self.respond(request_der)

    def _in_use(self) -> OcspResponder:
        """The delegated responder; for a CA whose key is in a PKCS#11 token, the issuing CA
        itself (RFC 6960 4.2.2.2), so that no responder key lives in memory (docs/hsm.md).
        """
        if self._authority.ca.config.kms != "pkcs11":
            return self._current()[1]
        with self._lock:
            if self._ca_responder is None:
                issuer = self._authority.issuer
                validity = self._authority.ca.config.ocsp_lifetime
                self._ca_responder = OcspResponder(
                    issuer=issuer.certificate,
                    responder_certificate=issuer.certificate,
                    responder_key=issuer.private_key,
                    validity=validity,
                    cache_for=validity * REUSE_SHARE,
                    cache_size=self._cache_size,
                )
            return self._ca_responder

    def _current(self) -> tuple[SelfIssued, OcspResponder]:
        issued = self._certificate.current()
        pair = self._responder
        if pair is not None and pair[0] is issued:
            return pair
        with self._lock:
            pair = self._responder
            if pair is None or pair[0] is not issued:
                validity = self._authority.ca.config.ocsp_lifetime
                pair = (
                    issued,
                    OcspResponder(
                        issuer=self._authority.issuer.certificate,
                        responder_certificate=issued.certificate,
                        responder_key=issued.private_key,
                        validity=validity,
                        cache_for=validity * REUSE_SHARE,
                        cache_size=self._cache_size,
                    ),
                )
                self._responder = pair
            return pair

    def _lookup(self, serial_number: int) -> CertStatus:
        authority = self._authority
        try:
            with authority.store.transaction(read_only=True) as session:
                found = CertificateRepository(session).status_of(
                    serial_number, authority.issuer_key_id
                )
        except DBAPIError as exc:
            logger.warning("OCSP: the store cannot answer (%s): tryLater", type(exc).__name__)
            raise _StoreUnavailable from None
        if found is None:
            return CertStatus.unknown()
        if found.status == CertificateStatus.REVOKED and found.revoked_at is not None:
            reason = found.revocation_reason
            return CertStatus.revoked(
                found.revoked_at, x509.ReasonFlags(reason) if reason else None
            )
        return CertStatus.good()


__all__ = ["RESPONDER_LIFETIME", "OcspService", "responder_spec"]
