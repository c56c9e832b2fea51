"""OCSP responses (RFC 6960) for one issuing CA, signed by its delegated responder.

What a request gets, in the order the checks run:

=====================================================  =====================================
the body is not a DER OCSPRequest                      ``malformedRequest`` (RFC 6960 4.2.1)
more than one certificate in one request               ``malformedRequest``: the lightweight
                                                       profile allows exactly one (RFC 5019
                                                       2.1.1), and so do the clients we serve
a nonce of 0 or more than 128 octets                   ``malformedRequest`` (RFC 9654 2.1,
                                                       which raised RFC 8954's limit of 32)
a CertID hash algorithm other than SHA-1/-2            ``unauthorized``
a CertID for another issuer (name or key hash differ)  ``unauthorized``: we cannot answer
                                                       authoritatively (RFC 6960 2.3,
                                                       RFC 5019 2.2.3)
a certificate of ours                                  a signed response: good, revoked or
                                                       unknown, as ``lookup`` says
=====================================================  =====================================

"unknown" is kept for serials of *our* issuer that the store does not know; for another
issuer, RFC 6960 2.2 would also allow "unknown", but a signed statement about a CA we do not
run is worth less than a clear refusal, and an unsigned refusal cannot be mistaken for one.

A signed response (RFC 6960 4.2.1, 4.2.2.3) has producedAt = thisUpdate = ``now``, nextUpdate
= ``now + validity``, a responder ID by key hash, the request's CertID echoed byte for byte,
the request's nonce (if any) echoed byte for byte, and the responder certificate in ``certs``
unless the CA signs its own responses. The response is encoded here (see
:mod:`ostiary.core.der`): cryptography's ``OCSPResponseBuilder`` reads the clock for
producedAt, and echoing exact bytes needs control of the encoding.

:class:`OcspResponder` checks its configuration once and may keep responses to requests
without a nonce for a while (RFC 5019 allows pre-produced responses); the status is part of
the cache key, so a revocation shows at once. :func:`build_ocsp_response` is the one-shot form.
"""

from __future__ import annotations

import base64
import binascii
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from ostiary.core import der
from ostiary.core.crl import REASON_CODES
from ostiary.core.errors import BadRequest, MalformedInput
from ostiary.core.signing import sign_data, signature_algorithm_der

#: RFC 9654 2.1: ``Nonce ::= OCTET STRING(SIZE(1..128))``.
MAX_NONCE_OCTETS = 128

_BASIC_RESPONSE_OID = der.oid("1.3.6.1.5.5.7.48.1.1")  # id-pkix-ocsp-basic
_NONCE_OID = der.oid("1.3.6.1.5.5.7.48.1.2")  # id-pkix-ocsp-nonce
_SHA1 = hashes.SHA1()
_CERT_ID_HASHES: tuple[hashes.HashAlgorithm, ...] = (
    _SHA1,
    hashes.SHA224(),
    hashes.SHA256(),
    hashes.SHA384(),
    hashes.SHA512(),
)


@dataclass(frozen=True)
class CertStatus:
    """What the store knows about one serial: good, revoked (when, why) or unknown."""

    status: ocsp.OCSPCertStatus
    revoked_at: datetime | None = None
    reason: x509.ReasonFlags | None = None

    def __post_init__(self) -> None:
        revoked = self.status is ocsp.OCSPCertStatus.REVOKED
        if revoked != (self.revoked_at is not None):
            raise BadRequest("a revocation time goes with the revoked status, and only with it")
        if self.reason is not None and not revoked:
            raise BadRequest("a revocation reason goes with the revoked status only")

    @classmethod
    def good(cls) -> CertStatus:
        return cls(ocsp.OCSPCertStatus.GOOD)

    @classmethod
    def revoked(cls, at: datetime, reason: x509.ReasonFlags | None = None) -> CertStatus:
        return cls(ocsp.OCSPCertStatus.REVOKED, at, reason)

    @classmethod
    def unknown(cls) -> CertStatus:
        return cls(ocsp.OCSPCertStatus.UNKNOWN)


#: Looks a serial number of the responder's issuer up in the store.
StatusLookup = Callable[[int], CertStatus]


@dataclass(frozen=True)
class OcspAnswer:
    """One DER ``OCSPResponse`` and what it says, for a cache in front of the responder.

    ``serial_number`` and ``status`` are set for a signed response (None for a refusal);
    ``reusable_until`` only for a response that may be handed to other identical requests
    until then (a request without a nonce, a responder that reuses responses).
    """

    response: bytes
    serial_number: int | None = None
    status: CertStatus | None = None
    reusable_until: datetime | None = None


def build_unsuccessful_response(status: ocsp.OCSPResponseStatus) -> bytes:
    """An unsigned ``OCSPResponse`` carrying only an error status (RFC 6960 4.2.1).

    The server uses it for ``tryLater`` or ``internalError`` when the store cannot answer.
    """
    if status is ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise BadRequest("a successful OCSP response needs a signed body")
    return der.tlv(der.SEQUENCE, der.enumerated(status.value))


class OcspResponder:
    """Answers OCSP requests about certificates of ``issuer``.

    ``responder_certificate`` is either ``issuer`` itself or a delegated responder it issued
    with the OCSPSigning usage (RFC 6960 4.2.2.2); ``responder_key`` is its key. Responses to
    requests without a nonce are reused for ``cache_for`` (zero: never), up to
    ``cache_size`` of them. Safe to share between threads.
    """

    def __init__(
        self,
        *,
        issuer: x509.Certificate,
        responder_certificate: x509.Certificate,
        responder_key: CertificateIssuerPrivateKeyTypes,
        validity: timedelta,
        cache_for: timedelta = timedelta(0),
        cache_size: int = 4096,
    ) -> None:
        if validity <= timedelta(0):
            raise BadRequest("an OCSP response's validity must be positive")
        if not timedelta(0) <= cache_for < validity:
            raise BadRequest("OCSP responses may be reused for less than their validity only")
        _check_responder(issuer, responder_certificate, responder_key)
        #: The CA whose certificates this responder answers about.
        self.issuer = issuer
        self._key = responder_key
        self._validity = validity
        self._cache_for = cache_for
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[bytes, CertStatus], tuple[datetime, bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self._algorithm = signature_algorithm_der(responder_key)
        issuer_der = issuer.public_bytes(serialization.Encoding.DER)
        parsed_issuer = asn1_x509.Certificate.load(issuer_der)
        name = bytes(parsed_issuer.subject.dump())
        key_bits = _public_key_bits(parsed_issuer)
        self._issuer_hashes = {
            algorithm.name: (_digest(algorithm, name), _digest(algorithm, key_bits))
            for algorithm in _CERT_ID_HASHES
        }
        responder_der = responder_certificate.public_bytes(serialization.Encoding.DER)
        parsed_responder = asn1_x509.Certificate.load(responder_der)
        # ResponderID byKey: SHA-1 of the responder's subjectPublicKey (RFC 6960 4.2.1).
        key_hash = _digest(_SHA1, _public_key_bits(parsed_responder))
        self._responder_id = der.context(2, der.tlv(der.OCTET_STRING, key_hash))
        delegated = responder_der != issuer_der
        self._certs = der.context(0, der.tlv(der.SEQUENCE, responder_der)) if delegated else b""

    def respond(self, request_der: bytes, *, lookup: StatusLookup, now: datetime) -> bytes:
        """The DER ``OCSPResponse`` to ``request_der`` (see the module docstring).

        ``lookup`` is called only for a well-formed request about one of our certificates;
        what it raises goes to the caller, who may answer ``tryLater`` with
        :func:`build_unsuccessful_response`.
        """
        return self.answer(request_der, lookup=lookup, now=now).response

    def answer(self, request_der: bytes, *, lookup: StatusLookup, now: datetime) -> OcspAnswer:
        """:meth:`respond`, with what a cache in front of the responder needs to know."""
        now = der.utc(now)
        try:
            request = _parse_request(request_der)
        except _Refusal as refusal:
            return OcspAnswer(build_unsuccessful_response(refusal.status))
        hashes_of_issuer = self._issuer_hashes.get(request.hash_name)
        if hashes_of_issuer != (request.issuer_name_hash, request.issuer_key_hash):
            return OcspAnswer(build_unsuccessful_response(ocsp.OCSPResponseStatus.UNAUTHORIZED))
        status = lookup(request.serial_number)
        if request.nonce_extension is not None or not self._cache_for:
            response = self._sign(request.cert_id, status, now, request.nonce_extension)
            return OcspAnswer(response, request.serial_number, status)
        produced, response = self._cached(request.cert_id, status, now)
        return OcspAnswer(response, request.serial_number, status, produced + self._cache_for)

    def response_for(
        self,
        serial_number: int,
        status: CertStatus,
        *,
        now: datetime,
        hash_algorithm: hashes.HashAlgorithm = _SHA1,
    ) -> bytes:
        """A pre-signed response for one of our serials, as a client using SHA-1 would ask.

        For responses published as files ahead of requests (RFC 5019 pre-produced
        responses); SHA-1 CertIDs are what most clients still send (RFC 5019 2.1.1).
        """
        if serial_number <= 0:
            raise BadRequest(f"serial number {serial_number} is not positive")
        if hash_algorithm.name not in self._issuer_hashes:
            raise BadRequest(f"OCSP CertIDs use SHA-1 or SHA-2, not {hash_algorithm.name}")
        name_hash, key_hash = self._issuer_hashes[hash_algorithm.name]
        cert_id = _encode_cert_id(hash_algorithm, name_hash, key_hash, serial_number)
        return self._sign(cert_id, status, der.utc(now), None)

    def _cached(self, cert_id: bytes, status: CertStatus, now: datetime) -> tuple[datetime, bytes]:
        """A response signed at most ``cache_for`` ago, and when it was signed."""
        key = (cert_id, status)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] <= now < hit[0] + self._cache_for:
                self._cache.move_to_end(key)
                return hit
        response = self._sign(cert_id, status, now, None)
        with self._lock:
            self._cache[key] = (now, response)
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return now, response

    def _sign(
        self, cert_id: bytes, status: CertStatus, now: datetime, nonce_extension: bytes | None
    ) -> bytes:
        """Encode and sign one BasicOCSPResponse (RFC 6960 4.2.1) in an OCSPResponse."""
        single = der.tlv(
            der.SEQUENCE,
            cert_id,
            _encode_status(status),
            der.generalized_time(now),
            der.context(0, der.generalized_time(now + self._validity)),
        )
        extensions = b""
        if nonce_extension is not None:
            nonce = der.tlv(der.SEQUENCE, _NONCE_OID, der.tlv(der.OCTET_STRING, nonce_extension))
            extensions = der.context(1, der.tlv(der.SEQUENCE, nonce))
        tbs = der.tlv(
            der.SEQUENCE,
            self._responder_id,
            der.generalized_time(now),
            der.tlv(der.SEQUENCE, single),
            extensions,
        )
        signature = sign_data(self._key, tbs)
        basic = der.tlv(der.SEQUENCE, tbs, self._algorithm, der.bit_string(signature), self._certs)
        response_bytes = der.tlv(
            der.SEQUENCE, _BASIC_RESPONSE_OID, der.tlv(der.OCTET_STRING, basic)
        )
        successful = der.enumerated(ocsp.OCSPResponseStatus.SUCCESSFUL.value)
        return der.tlv(der.SEQUENCE, successful, der.context(0, response_bytes))


def build_ocsp_response(
    request_der: bytes,
    *,
    lookup: StatusLookup,
    issuer: x509.Certificate,
    responder_certificate: x509.Certificate,
    responder_key: CertificateIssuerPrivateKeyTypes,
    now: datetime,
    validity: timedelta,
) -> bytes:
    """Answer one OCSP request without keeping anything (see :class:`OcspResponder`)."""
    responder = OcspResponder(
        issuer=issuer,
        responder_certificate=responder_certificate,
        responder_key=responder_key,
        validity=validity,
    )
    return responder.respond(request_der, lookup=lookup, now=now)


def ocsp_request_from_get_path(path_segment: str) -> bytes:
    """The DER request in an OCSP GET URL's last part (RFC 6960 appendix A.1).

    That part is the base64 of the request, URL-encoded. Also read: base64 that was not
    URL-encoded (a literal ``/`` arrives as more path), base64url, missing padding, and a
    ``+`` that a form decoder turned into a space. :class:`MalformedInput` if it is not
    base64 at all; whether the bytes are an OCSP request is :meth:`OcspResponder.respond`'s
    business (it answers ``malformedRequest``).
    """
    text = urllib.parse.unquote(path_segment.strip().lstrip("/")).replace(" ", "+")
    text = text.replace("-", "+").replace("_", "/").rstrip("=")
    text += "=" * (-len(text) % 4)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedInput("the OCSP GET path is not a base64-encoded request") from None
    if not data:
        raise MalformedInput("the OCSP GET path is empty")
    return data


@dataclass(frozen=True)
class _Request:
    cert_id: bytes
    hash_name: str
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial_number: int
    nonce_extension: bytes | None


class _Refusal(Exception):
    def __init__(self, status: ocsp.OCSPResponseStatus) -> None:
        super().__init__(status.name)
        self.status = status


def _parse_request(request_der: bytes) -> _Request:
    """Read one request; raise :class:`_Refusal` with the status a bad one gets.

    cryptography's strict parser is the gate; :func:`_raw_parts` then lifts the exact bytes
    of the CertID and of the nonce's extnValue from the DER that gate has accepted.
    """
    malformed = _Refusal(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    try:
        request = ocsp.load_der_ocsp_request(request_der)
        nonce = _nonce_of(request)
    except (ValueError, NotImplementedError, x509.DuplicateExtension):
        # NotImplementedError: several requests in one (see the module docstring).
        raise malformed from None
    if nonce is not None and not 1 <= len(nonce) <= MAX_NONCE_OCTETS:
        raise malformed
    try:
        hash_name = request.hash_algorithm.name
    except UnsupportedAlgorithm:
        raise _Refusal(ocsp.OCSPResponseStatus.UNAUTHORIZED) from None
    try:
        cert_id, nonce_extension = _raw_parts(request_der, with_nonce=nonce is not None)
    except (ValueError, IndexError):  # pragma: no cover - cryptography accepted the bytes
        raise malformed from None
    return _Request(
        cert_id=cert_id,
        hash_name=hash_name,
        issuer_name_hash=request.issuer_name_hash,
        issuer_key_hash=request.issuer_key_hash,
        serial_number=request.serial_number,
        nonce_extension=nonce_extension,
    )


def _raw_parts(request_der: bytes, *, with_nonce: bool) -> tuple[bytes, bytes | None]:
    """The CertID's DER and the nonce's extnValue, exactly as the client encoded them.

    Walks ``OCSPRequest { tbsRequest { [0] version?, [1] requestorName?, requestList
    { Request { reqCert, ... } }, [2] requestExtensions? } }`` (RFC 6960 4.1.1).
    """
    (request,) = der.elements(request_der)
    tbs_request = der.elements(request.contents)[0]
    fields = [e for e in der.elements(tbs_request.contents) if e.tag not in (0xA0, 0xA1)]
    (first_request, *_) = der.elements(fields[0].contents)
    cert_id = der.elements(first_request.contents)[0].encoded
    if with_nonce and len(fields) > 1:
        (extensions,) = der.elements(fields[1].contents)
        for extension in der.elements(extensions.contents):
            parts = der.elements(extension.contents)
            if parts[0].encoded == _NONCE_OID:
                return cert_id, parts[-1].contents
    return cert_id, None


def _nonce_of(request: ocsp.OCSPRequest) -> bytes | None:
    """The nonce value as cryptography reads it (an OCTET STRING's content, else raw)."""
    try:
        extension = request.extensions.get_extension_for_class(x509.OCSPNonce)
    except x509.ExtensionNotFound:
        return None
    return extension.value.nonce


def _encode_status(status: CertStatus) -> bytes:
    """CertStatus: good [0] NULL, revoked [1] RevokedInfo, unknown [2] NULL (RFC 6960 4.2.1)."""
    if status.status is ocsp.OCSPCertStatus.GOOD:
        return b"\x80\x00"
    if status.status is ocsp.OCSPCertStatus.UNKNOWN:
        return b"\x82\x00"
    if status.revoked_at is None:  # pragma: no cover - CertStatus.__post_init__ prevents it
        raise BadRequest("a revoked status needs its revocation time")
    reason = b""
    if status.reason is not None and status.reason is not x509.ReasonFlags.unspecified:
        reason = der.context(0, der.enumerated(REASON_CODES[status.reason]))
    return der.tlv(0xA1, der.generalized_time(status.revoked_at), reason)


def _encode_cert_id(
    algorithm: hashes.HashAlgorithm, name_hash: bytes, key_hash: bytes, serial_number: int
) -> bytes:
    """CertID (RFC 6960 4.1.1), with the hash AlgorithmIdentifier's NULL as openssl sends it."""
    oids = {
        "sha1": "1.3.14.3.2.26",
        "sha224": "2.16.840.1.101.3.4.2.4",
        "sha256": "2.16.840.1.101.3.4.2.1",
        "sha384": "2.16.840.1.101.3.4.2.2",
        "sha512": "2.16.840.1.101.3.4.2.3",
    }
    algorithm_id = der.tlv(der.SEQUENCE, der.oid(oids[algorithm.name]), b"\x05\x00")
    serial = serial_number.to_bytes((serial_number.bit_length() + 8) // 8, "big", signed=True)
    return der.tlv(
        der.SEQUENCE,
        algorithm_id,
        der.tlv(der.OCTET_STRING, name_hash),
        der.tlv(der.OCTET_STRING, key_hash),
        der.tlv(der.INTEGER, serial),
    )


def _public_key_bits(certificate: asn1_x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING's value, without its unused-bits octet (RFC 6960 4.1.1)."""
    return bytes(certificate.public_key["public_key"].contents[1:])


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    context = hashes.Hash(algorithm)
    context.update(data)
    return context.finalize()


def _check_responder(
    issuer: x509.Certificate,
    responder: x509.Certificate,
    key: CertificateIssuerPrivateKeyTypes,
) -> None:
    """The responder must be the CA or a responder it delegated to (RFC 6960 4.2.2.2)."""
    if key.public_key() != responder.public_key():
        raise BadRequest("the OCSP signing key does not belong to the responder certificate")
    if responder == issuer:
        return
    try:
        responder.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        raise BadRequest("the OCSP responder certificate was not issued by the CA") from None
    try:
        usages = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = x509.ExtendedKeyUsage([])
    if ExtendedKeyUsageOID.OCSP_SIGNING not in usages:
        raise BadRequest(
            "a delegated OCSP responder needs the OCSPSigning usage (RFC 6960 4.2.2.2)"
        )
