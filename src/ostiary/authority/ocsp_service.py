"""The CA server's OCSP responder: pre-signed answers in memory, kept true to the store.

Responses (RFC 6960) are signed by a delegated responder (RFC 6960 section 4.2.2.2): a
short-lived ``ocsp``-profile certificate (OCSPSigning, id-pkix-ocsp-nocheck) that this replica
issues itself at start through the Authority and renews at two thirds of its lifetime
(:class:`~ostiary.authority.self_issued.RenewingCertificate`), so the intermediate's key signs
one certificate a day instead of every response.

What a request costs. The answer to a request without a nonce is kept in memory, keyed by the
request's exact bytes, until its refresh point (a quarter of the response's validity after
it was signed, never past the responder certificate): a repeated request is one dict lookup,
no parsing, no database, no signature (:meth:`OcspService.cached`). The first request about a
certificate reads its status from the store once and keeps it (good or revoked; "unknown" is
never kept, so a certificate issued on another replica is known at its first request); a
request with a nonce (RFC 9654) is always signed afresh, with the nonce echoed, from the kept
status.

How a revocation reaches the cache:

- made in this process (:meth:`Authority.revoke`): the serial's status and answers are
  dropped as the revocation commits, before the API answers;
- made elsewhere (another replica, ``ostiary ca revoke``): :class:`RevocationWatch` reads the
  audit log's head (one row) every :data:`WATCH_INTERVAL` in a background thread; when it
  moved, it reads the new ``certificate.revoked`` entries and drops those serials. A
  revocation committed anywhere shows here within one interval (plus one poll's time).
- If the watch has not polled successfully for :data:`TRUST_FOR` (database down, process
  stalled), nothing kept is trusted: every request reads the store again, as if there were no
  cache, and an unreachable store gets the unsigned ``tryLater`` (RFC 6960 section 2.3).

A status read while an invalidation happens is not kept (a generation counter), so a read
that raced a revocation cannot put the old status back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509 import ocsp
from sqlalchemy import bindparam, select
from sqlalchemy.exc import DBAPIError

from ostiary.authority.authority import Authority
from ostiary.authority.self_issued import RenewingCertificate, SelfIssued, SelfIssuedSpec
from ostiary.core.ca import key_id_hex
from ostiary.core.errors import MalformedInput
from ostiary.core.ocsp import (
    CertStatus,
    OcspAnswer,
    OcspResponder,
    build_unsuccessful_response,
    ocsp_request_from_get_path,
)
from ostiary.store import (
    AuditEntry,
    AuditHead,
    CertificateRepository,
    CertificateStatus,
    Store,
    issuer_key_id_of,
)
from ostiary.store.issuers import root_ocsp_for

#: Lifetime of the delegated responder certificate.
RESPONDER_LIFETIME = timedelta(hours=24)
#: Share of a response's validity during which it is reused (for requests without a nonce).
REUSE_SHARE = 0.25
#: How often the watch reads the audit log's head for revocations made elsewhere (seconds).
WATCH_INTERVAL = 0.25
#: Past this long without a successful poll (seconds), the cache is not trusted.
TRUST_FOR = 2.0
#: The audit event of a revocation; its target is the serial number in hex.
REVOKED_EVENT = "certificate.revoked"
#: The audit event of an intermediate's rotation (ostiary.authority.rollover.ROTATED_EVENT).
ROTATED_EVENT = "ca.intermediate_rotated"

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


@dataclass(frozen=True, slots=True)
class _Kept:
    """A reusable answer: its bytes, until when, and the status object it was signed from."""

    response: bytes
    serial_number: int
    status: CertStatus
    until: datetime


class RevocationWatch:
    """Polls the audit log for revocations committed by anyone, in a daemon thread.

    ``on_revoked`` gets the serial numbers of each batch of new ``certificate.revoked``
    entries. :meth:`poll` is one round (the tests call it directly); :meth:`start` and
    :meth:`stop` run it every ``interval`` seconds.
    """

    def __init__(
        self,
        store: Store,
        on_revoked: Callable[[set[int]], None],
        *,
        interval: float = WATCH_INTERVAL,
    ) -> None:
        self._store = store
        self._on_revoked = on_revoked
        #: Also told (with no arguments) after each poll that found revocations: the feed.
        self.listeners: list[Callable[[], None]] = []
        #: Told (with no arguments) after a poll that found an intermediate rotated
        #: (:mod:`ostiary.authority.rollover`): the server switches its issuing CA.
        self.rotation_listeners: list[Callable[[], None]] = []
        self.interval = interval
        self._seen: int | None = None
        #: ``time.monotonic()`` of the last successful poll (None: never).
        self.polled_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> None:
        """Read the audit head; report the revocations since the last poll."""
        # A pooled connection and Core, not an ORM session: this runs four times a second in
        # every server process, and once more after every issuance (the head moves).
        with self._store.read_engine.connect() as connection:
            head = int(connection.scalar(_HEAD) or 0)
            seen = self._seen
            found: list[tuple[str, str | None]] = []
            if seen is not None and head > seen:
                rows = connection.execute(_WATCHED, {"seen": seen, "head": head})
                found = [(event, target) for event, target in rows]
        if any(event == ROTATED_EVENT for event, _ in found):
            for rotation_listener in self.rotation_listeners:
                rotation_listener()
        targets = [target for event, target in found if event == REVOKED_EVENT]
        serials = set()
        for target in targets:
            try:
                serials.add(int(target or "", 16))
            except ValueError:
                logger.warning("audit entry %s names no serial number: %r", REVOKED_EVENT, target)
        if serials:
            self._on_revoked(serials)
            for listener in self.listeners:
                listener()
        self._seen = head
        self.polled_at = time.monotonic()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ocsp-revocation-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self.polled_at = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except DBAPIError as exc:
                logger.warning("OCSP: cannot read the audit log (%s)", type(exc).__name__)
            self._stop.wait(self.interval)


_HEAD = select(AuditHead.last_entry_id)
_WATCHED = select(AuditEntry.event, AuditEntry.target).where(
    AuditEntry.id > bindparam("seen"),
    AuditEntry.id <= bindparam("head"),
    AuditEntry.event.in_((REVOKED_EVENT, ROTATED_EVENT)),
)


class OcspService:
    """Answers OCSP requests about the authority's issuing CA (thread-safe)."""

    def __init__(
        self,
        authority: Authority,
        *,
        cache_size: int = 65536,
        watch_interval: float = WATCH_INTERVAL,
        trust_for: float = TRUST_FOR,
    ) -> None:
        self._authority = authority
        self._trust_for = trust_for
        self._certificate = RenewingCertificate(authority, responder_spec(authority))
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._responder: tuple[SelfIssued, OcspResponder] | None = None
        self._ca_responder: OcspResponder | None = None  # kms = "pkcs11": see _in_use()
        #: Responders of the other intermediates, by key id (see _others()).
        self._by_issuer: dict[str, OcspResponder] = {}
        #: Good or revoked statuses read from the store, by serial ("unknown" is not kept).
        self._statuses: dict[int, CertStatus] = {}
        #: Answers to requests without a nonce, by the request's exact DER.
        self._answers: dict[bytes, _Kept] = {}
        #: Grows with every invalidation; a status read across one is not kept.
        self._generation = 0
        self.watch = RevocationWatch(authority.store, self.forget, interval=watch_interval)
        authority.revocation_listeners.append(lambda serial: self.forget({serial}))

    @property
    def responder_certificate(self) -> x509.Certificate:
        """The delegated responder certificate in use (issued now if there is none yet);
        for a PKCS#11 CA, the issuing CA certificate.
        """
        if self._authority.ca.config.kms == "pkcs11":
            return self._authority.issuer.certificate
        return self._current()[0].certificate

    def cached(self, request_der: bytes) -> bytes | None:
        """The kept answer to exactly these request bytes, if it is still good; else None.

        Never blocks: no database, no signing. The event loop calls it for every request and
        hands a miss to :meth:`respond` in a worker thread.
        """
        kept = self._answers.get(request_der)
        if kept is None or not self._trusted():
            return None
        if self._statuses.get(kept.serial_number) is not kept.status:
            return None
        if self._authority.clock() >= kept.until:
            return None
        return kept.response

    def respond(self, request_der: bytes) -> bytes:
        """The DER ``OCSPResponse`` for a DER request (POST); may read the store."""
        hit = self.cached(request_der)
        if hit is not None:
            return hit
        responder = self._in_use()
        try:
            now = self._authority.clock()
            answer = responder.answer(request_der, lookup=self._lookup_of(responder), now=now)
            if answer.serial_number is None:  # not about the main issuer: a retiring one?
                for other in self._others(responder):
                    found = other.answer(request_der, lookup=self._lookup_of(other), now=now)
                    if found.serial_number is not None:
                        answer = found
                        break
                else:
                    about_intermediate = self._root_answer(request_der)
                    if about_intermediate is not None:
                        return about_intermediate
        except _StoreUnavailable:
            return build_unsuccessful_response(ocsp.OCSPResponseStatus.TRY_LATER)
        self._keep(request_der, answer)
        return answer.response

    def _root_answer(self, request_der: bytes) -> bytes | None:
        """The root-signed answer about one of its intermediates, made with the root CRL
        (:mod:`ostiary.authority.root_crl`; the server has no root key), if the request
        asks about one (SHA-1 CertID, RFC 5019).
        """
        try:
            request = ocsp.load_der_ocsp_request(request_der)
        except ValueError:
            return None
        root = self._authority.ca.root
        if not isinstance(request.hash_algorithm, hashes.SHA1):
            return None
        expected = x509.SubjectKeyIdentifier.from_public_key(root.public_key()).digest
        if request.issuer_key_hash != expected:
            return None
        try:
            with self._authority.store.transaction(read_only=True) as session:
                return root_ocsp_for(session, key_id_hex(root), request.serial_number)
        except DBAPIError:
            return build_unsuccessful_response(ocsp.OCSPResponseStatus.TRY_LATER)

    def _others(self, main: OcspResponder) -> list[OcspResponder]:
        """Responders for the other intermediates (retiring, or the active one after a
        rotation): each signs with its intermediate's own key (RFC 6960 4.2.2.2).
        """
        issuers = self._authority.issuers
        if len(issuers) < 2:
            return []
        with self._lock:
            for key_id, issuer in issuers.items():
                if key_id not in self._by_issuer:
                    self._by_issuer[key_id] = self._make_responder(
                        issuer.certificate, issuer.certificate, issuer.private_key
                    )
            return [r for r in self._by_issuer.values() if r is not main]

    def respond_to_get(self, path: str) -> bytes:
        """The response for the GET form; a path that is not base64 is a malformed request."""
        try:
            request_der = ocsp_request_from_get_path(path)
        except MalformedInput:
            return build_unsuccessful_response(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        return self.respond(request_der)

    def forget(self, serials: set[int]) -> None:
        """Drop what is kept about these serials (they were revoked)."""
        with self._lock:
            self._generation += 1
            for serial in serials:
                self._statuses.pop(serial, None)

    def _trusted(self) -> bool:
        polled = self.watch.polled_at
        return polled is not None and time.monotonic() - polled < self._trust_for

    def _keep(self, request_der: bytes, answer: OcspAnswer) -> None:
        if answer.reusable_until is None or answer.serial_number is None or answer.status is None:
            return
        if self._statuses.get(answer.serial_number) is not answer.status:
            return  # not a kept status (unknown, or invalidated meanwhile)
        until = min(answer.reusable_until, self._responder_not_after())
        with self._lock:
            if len(self._answers) >= self._cache_size:
                # Oldest first (dicts keep insertion order): cheap, and good enough here.
                for key in list(self._answers)[: max(1, self._cache_size // 8)]:
                    del self._answers[key]
            self._answers[request_der] = _Kept(
                answer.response, answer.serial_number, answer.status, until
            )

    def _responder_not_after(self) -> datetime:
        return self.responder_certificate.not_valid_after_utc

    def _in_use(self) -> OcspResponder:
        """The delegated responder; for a CA whose key is in a PKCS#11 token, the issuing CA
        itself (RFC 6960 4.2.2.2), so that no responder key lives in memory (docs/hsm.md).
        """
        if self._authority.ca.config.kms != "pkcs11":
            return self._current()[1]
        with self._lock:
            if self._ca_responder is None:
                issuer = self._authority.issuer
                self._ca_responder = self._make_responder(
                    issuer.certificate, issuer.certificate, issuer.private_key
                )
            return self._ca_responder

    def _make_responder(
        self,
        issuer: x509.Certificate,
        certificate: x509.Certificate,
        key: CertificateIssuerPrivateKeyTypes,
    ) -> OcspResponder:
        validity = self._authority.ca.config.ocsp_lifetime
        return OcspResponder(
            issuer=issuer,
            responder_certificate=certificate,
            responder_key=key,
            validity=validity,
            cache_for=validity * REUSE_SHARE,
            cache_size=self._cache_size,
        )

    def _current(self) -> tuple[SelfIssued, OcspResponder]:
        issued = self._certificate.current()
        pair = self._responder
        if pair is not None and pair[0] is issued:
            return pair
        with self._lock:
            pair = self._responder
            if pair is None or pair[0] is not issued:
                pair = (
                    issued,
                    self._make_responder(
                        self._issuer_of(issued.certificate), issued.certificate, issued.private_key
                    ),
                )
                self._responder = pair
            return pair

    def _issuer_of(self, certificate: x509.Certificate) -> x509.Certificate:
        """The intermediate that issued the responder certificate (the issuing one when it
        was made, which a rotation may have changed since).
        """
        try:
            return self._authority.issuers[issuer_key_id_of(certificate)].certificate
        except KeyError:
            return self._authority.issuer.certificate

    def _lookup_of(self, responder: OcspResponder) -> Callable[[int], CertStatus]:
        key_id = key_id_hex(responder.issuer)
        return lambda serial_number: self._status(serial_number, key_id)

    def _status(self, serial_number: int, key_id: str) -> CertStatus:
        """The kept status if trusted, else the store's (kept unless it raced a revocation)."""
        if self._trusted():
            kept = self._statuses.get(serial_number)
            if kept is not None:
                return kept
        generation = self._generation
        status = self._lookup(serial_number, key_id)
        if status.status is ocsp.OCSPCertStatus.UNKNOWN:
            return status
        with self._lock:
            if self._generation != generation:
                return status
            kept = self._statuses.get(serial_number)
            if kept == status:
                return kept  # the same object: the answers made from it stay valid
            self._statuses[serial_number] = status
            if len(self._statuses) > self._cache_size * 4:
                self._statuses.clear()  # a runaway set of serials: start over
                self._statuses[serial_number] = status
        return status

    def _lookup(self, serial_number: int, key_id: str) -> CertStatus:
        authority = self._authority
        try:
            with authority.store.transaction(read_only=True) as session:
                found = CertificateRepository(session).status_of(serial_number, key_id)
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


__all__ = [
    "RESPONDER_LIFETIME",
    "TRUST_FOR",
    "WATCH_INTERVAL",
    "OcspService",
    "RevocationWatch",
    "responder_spec",
]
