"""Is this client certificate revoked? Asked on every new connection, answered from a cache,
for the leaf and for each CA certificate between it and the root (an issuing CA revoked by the
root, through the root's CRL named in the intermediate's CRL distribution point).

- OCSP (RFC 6960): a request for (issuer, serial) POSTed to the responder named in the
  certificate's Authority Information Access; the response must be signed by the issuer or by
  a responder certificate the issuer delegated (EKU id-kp-OCSPSigning, 4.2.2.2).
- CRL (RFC 5280 5): fetched from the certificate's CRL Distribution Point, signature checked
  against the issuer, kept until it has to be refreshed (``cache_seconds`` or before
  nextUpdate, whichever comes first).

A status is reused for ``cache_seconds``. When the CA cannot be asked, the last answer is
still trusted until its own validity (nextUpdate) plus ``grace_seconds``; past that the
connection is refused: the gateway fails closed.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from ostiary.gateway.config import RevocationMethod
from ostiary.gateway.memo import ByObject

#: Allowed clock difference between the gateway and the CA.
_SKEW = timedelta(minutes=5)


class RevocationUnknown(Exception):
    """The status could not be learned (no URL, CA unreachable, bad response)."""


@dataclass(frozen=True)
class Status:
    """A verified answer: revoked or not, and until when it may be trusted."""

    revoked: bool
    valid_until: datetime
    fetched_at: float  # monotonic


class RevocationChecker:
    """Cached OCSP/CRL status per (issuer, serial); one instance per gateway."""

    def __init__(
        self,
        method: RevocationMethod,
        *,
        cache_seconds: float,
        grace_seconds: float,
        timeout_seconds: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.method = method
        self.cache_seconds = cache_seconds
        self.grace_seconds = grace_seconds
        self.clock = clock
        # A synchronous client run in worker threads: short blocking fetches, and no anyio
        # task group left behind when the loop stops while a fetch is under way.
        self._http = httpx.Client(timeout=timeout_seconds, follow_redirects=False)
        self._statuses: dict[tuple[bytes, int], Status] = {}
        self._crls: dict[str, tuple[x509.CertificateRevocationList, Status]] = {}
        self._locks: dict[object, asyncio.Lock] = {}
        self._names_source: ByObject[x509.Certificate, bool] = ByObject()

    async def aclose(self) -> None:
        self._http.close()

    async def is_revoked(
        self, leaf: x509.Certificate, issuer: x509.Certificate, *, unless_unnamed: bool = False
    ) -> bool:
        """True if revoked, False if good; raises :class:`RevocationUnknown` (fail closed).

        With ``unless_unnamed`` (for CA certificates: RFC 5280 makes the CRL distribution
        point optional), a certificate that names no OCSP responder and no CRL is taken as
        good; one that names them is checked like a leaf, and fails closed the same way.
        """
        if self.method == "off":
            return False
        if unless_unnamed and not self._names_a_source(leaf):
            return False
        key = (issuer.fingerprint(hashes.SHA256()), leaf.serial_number)
        cached = self._statuses.get(key)
        if cached is not None and time.monotonic() - cached.fetched_at < self.cache_seconds:
            return cached.revoked
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._statuses.get(key)
            if cached is not None and time.monotonic() - cached.fetched_at < self.cache_seconds:
                return cached.revoked
            try:
                status = await self._ask(leaf, issuer)
            except RevocationUnknown:
                if cached is not None and self._within_grace(cached):
                    return cached.revoked
                raise
            self._statuses[key] = status
            return status.revoked

    def _names_a_source(self, certificate: x509.Certificate) -> bool:
        """Whether ``certificate`` names an OCSP responder or a CRL (asked of every CA
        certificate of the path on every connection: the answer is kept per object).
        """
        named = self._names_source.get(certificate)
        if named is None:
            named = bool(_ocsp_urls(certificate) or _crl_urls(certificate))
            self._names_source.put(certificate, named)
        return named

    def _within_grace(self, status: Status) -> bool:
        return self.clock() <= status.valid_until + timedelta(seconds=self.grace_seconds)

    async def _ask(self, leaf: x509.Certificate, issuer: x509.Certificate) -> Status:
        ocsp_urls = _ocsp_urls(leaf)
        crl_urls = _crl_urls(leaf)
        if self.method in ("auto", "ocsp") and ocsp_urls:
            try:
                return await self._ask_ocsp(ocsp_urls[0], leaf, issuer)
            except RevocationUnknown:
                if self.method == "ocsp" or not crl_urls:
                    raise
        if self.method in ("auto", "crl") and crl_urls:
            return await self._ask_crl(crl_urls[0], leaf, issuer)
        raise RevocationUnknown(f"no {self.method} location in the certificate")

    async def _fetch(self, request: httpx.Request) -> bytes:
        try:
            answer = await asyncio.to_thread(self._http.send, request)
        except httpx.HTTPError as exc:
            raise RevocationUnknown(
                f"{request.url}: {_describe_failure(exc, request.url.host)}"
            ) from None
        if answer.status_code != 200:
            raise RevocationUnknown(f"{request.url}: HTTP {answer.status_code}")
        return answer.content

    async def _ask_ocsp(self, url: str, leaf: x509.Certificate, issuer: x509.Certificate) -> Status:
        request = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1()).build()
        body = request.public_bytes(serialization.Encoding.DER)
        der = await self._fetch(
            self._http.build_request(
                "POST", url, content=body, headers={"content-type": "application/ocsp-request"}
            )
        )
        try:
            response = ocsp.load_der_ocsp_response(der)
        except ValueError:
            raise RevocationUnknown("unparseable OCSP response") from None
        if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise RevocationUnknown(f"OCSP {response.response_status.name}")
        if response.serial_number != leaf.serial_number:
            raise RevocationUnknown("OCSP response for another certificate")
        _check_ocsp_signature(response, issuer)
        now = self.clock()
        this_update = response.this_update_utc
        next_update = response.next_update_utc or (now + timedelta(seconds=self.cache_seconds))
        if this_update > now + _SKEW or next_update < now - _SKEW:
            raise RevocationUnknown("OCSP response outside its validity")
        if response.certificate_status == ocsp.OCSPCertStatus.UNKNOWN:
            raise RevocationUnknown("the responder does not know the certificate")
        revoked = response.certificate_status == ocsp.OCSPCertStatus.REVOKED
        return Status(revoked, next_update, time.monotonic())

    async def _ask_crl(self, url: str, leaf: x509.Certificate, issuer: x509.Certificate) -> Status:
        crl = await self._crl(url, issuer)
        revoked = crl[0].get_revoked_certificate_by_serial_number(leaf.serial_number) is not None
        return Status(revoked, crl[1].valid_until, time.monotonic())

    async def _crl(
        self, url: str, issuer: x509.Certificate
    ) -> tuple[x509.CertificateRevocationList, Status]:
        cached = self._crls.get(url)
        now = self.clock()
        if cached is not None and time.monotonic() - cached[1].fetched_at < self.cache_seconds:
            if cached[1].valid_until > now:
                return cached
        try:
            data = await self._fetch(self._http.build_request("GET", url))
            crl = _load_crl(data)
            if crl.issuer != issuer.subject or not _crl_signed_by(crl, issuer):
                raise RevocationUnknown("the CRL is not signed by the certificate's issuer")
            next_update = crl.next_update_utc
            if next_update is None or next_update < now - _SKEW:
                raise RevocationUnknown("the CRL is out of date")
        except RevocationUnknown:
            if cached is not None and self._within_grace(cached[1]):
                return cached
            raise
        entry = (crl, Status(False, next_update, time.monotonic()))
        self._crls[url] = entry
        return entry


def _describe_failure(exc: httpx.HTTPError, host: str) -> str:
    """Why a fetch failed, naming a name that did not resolve: the usual mistake is a CA URL
    (``ca init --url``) that the gateway's machine cannot resolve, and "ConnectError" alone
    does not say so.
    """
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, socket.gaierror):
            return f"the name {host!r} did not resolve (DNS: {cause.strerror})"
        cause = cause.__cause__ or cause.__context__
    return f"{type(exc).__name__} ({exc})" if str(exc) else type(exc).__name__


def _ocsp_urls(certificate: x509.Certificate) -> list[str]:
    try:
        aia = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    except x509.ExtensionNotFound:
        return []
    return [
        d.access_location.value
        for d in aia.value
        if d.access_method == AuthorityInformationAccessOID.OCSP
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
    ]


def _crl_urls(certificate: x509.Certificate) -> list[str]:
    try:
        points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    except x509.ExtensionNotFound:
        return []
    return [
        name.value
        for point in points.value
        for name in point.full_name or ()
        if isinstance(name, x509.UniformResourceIdentifier)
    ]


def _load_crl(data: bytes) -> x509.CertificateRevocationList:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise RevocationUnknown("unparseable CRL") from None


def _crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _check_ocsp_signature(response: ocsp.OCSPResponse, issuer: x509.Certificate) -> None:
    """The response is signed by the issuer, or by a responder the issuer delegated to."""
    signer: x509.Certificate | None = None
    if _responder_is(response, issuer):
        signer = issuer
    else:
        for candidate in response.certificates:
            if not _responder_is(response, candidate):
                continue
            try:
                candidate.verify_directly_issued_by(issuer)
                usages = candidate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
            except (InvalidSignature, ValueError, TypeError, x509.ExtensionNotFound):
                continue
            if ExtendedKeyUsageOID.OCSP_SIGNING in usages.value:
                signer = candidate
                break
    if signer is None:
        raise RevocationUnknown("the OCSP responder is not authorized by the issuer")
    if not _signature_valid(
        signer, response.signature, response.tbs_response_bytes, response.signature_hash_algorithm
    ):
        raise RevocationUnknown("the OCSP response signature does not verify")


def _responder_is(response: ocsp.OCSPResponse, certificate: x509.Certificate) -> bool:
    if response.responder_name is not None:
        return response.responder_name == certificate.subject
    key_hash = x509.SubjectKeyIdentifier.from_public_key(certificate.public_key()).digest
    return response.responder_key_hash == key_hash


def _signature_valid(
    certificate: x509.Certificate,
    signature: bytes,
    data: bytes,
    algorithm: hashes.HashAlgorithm | None,
) -> bool:
    key = certificate.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
        else:
            return False
    except InvalidSignature:
        return False
    return True
