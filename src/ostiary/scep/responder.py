"""The SCEP operations of one CA (RFC 8894 §3.5, §4): what ``/scep/NAME`` answers.

``GetCACaps`` and ``GetCACert`` describe the CA; ``PKIOperation`` carries a pkiMessage and
gets a CertRep. Proof of identity (challenges, transactions, renewal) is the ``scep``
provisioner's (:mod:`ostiary.provisioners.scep_enroll`); issuance the Authority's. Every
refusal of a readable pkiMessage is a signed FAILURE CertRep with its failInfo, logged with
the reason; a body that is no pkiMessage at all is a 400 problem, and a temporary failure
(the audit log cannot be written, the database is unreachable) a 503 problem with
Retry-After, which clients retry, with nothing recorded.

A device asks GetCACaps, GetCACert and then PKIOperation for every enrollment, so the
provisioner is kept in memory (:class:`~ostiary.provisioners.ProvisionerCache`): for
PKIOperation its row's version is read again each time (an update from the CLI, such as
``--require-approval``, holds for the next request), while GetCACaps and GetCACert, which
only describe the CA and its RA, are answered from memory for up to
:data:`~ostiary.provisioners.cache.PROVISIONER_RECHECK_SECONDS` (:meth:`answer_now`, from
the listener's event loop without a worker thread).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import rsa

from ostiary.authority.authority import Authority
from ostiary.core.errors import BadRequest, NotFound, OstiaryError, Unavailable
from ostiary.provisioners.base import CAIdentity
from ostiary.provisioners.cache import ProvisionerCache
from ostiary.provisioners.scep import ScepProvisioner, load_scep_provisioner
from ostiary.provisioners.scep_enroll import Outcome, WhileCommitting, enroll, poll, renew
from ostiary.scep.message import (
    Envelope,
    FailInfo,
    MessageType,
    PkiMessage,
    ScepFailure,
    open_message,
    read_envelope,
)
from ostiary.scep.reply import PkiStatus, cert_rep, certs_only
from ostiary.store import Store

logger = logging.getLogger(__name__)

#: What GetCACaps announces (clients send what they like anyway; all of it is accepted).
CAPABILITIES = ("POSTPKIOperation", "SHA-256", "SHA-512", "AES", "SCEPStandard", "Renewal")
CA_RA_CERT = "application/x-x509-ca-ra-cert"
PKI_MESSAGE = "application/x-pki-message"
TEXT = "text/plain"
_CAPABILITIES = "\n".join(CAPABILITIES).encode() + b"\n"


@dataclass(frozen=True)
class ScepAnswer:
    """An HTTP answer: status, body, media type."""

    status: int
    body: bytes
    content_type: str


def parse_query(query: str) -> tuple[str, str | None]:
    """``operation`` and ``message`` of a query string, percent-decoded but with ``+`` kept
    (macOS sends the base64 message unescaped; ``parse_qs`` would turn ``+`` into a space).
    """
    operation, message = "", None
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key == "operation":
            operation = unquote(value)
        elif key == "message":
            message = unquote(value)
    return operation, message


def decode_get_message(message: str) -> bytes:
    """The DER of a GET PKIOperation's base64 ``message``; :class:`BadRequest` if not base64."""
    text = "".join(message.replace(" ", "+").split())
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("the PKIOperation message is not base64") from None


class ScepResponder:
    """SCEP for every ``scep`` provisioner of one Authority."""

    def __init__(self, authority: Authority, ca: CAIdentity, password: bytes) -> None:
        self.authority = authority
        self.ca = ca
        self._password = password
        self._keys: dict[str, tuple[str, rsa.RSAPrivateKey]] = {}
        self._lock = threading.Lock()
        #: GetCACaps and GetCACert: re-checked every few seconds.
        self._described: ProvisionerCache[ScepProvisioner] = ProvisionerCache(
            authority.store, _load
        )
        #: PKIOperation: the row's version read every time, the config parsed once.
        self._checked: ProvisionerCache[ScepProvisioner] = ProvisionerCache(
            authority.store, _load, recheck_seconds=0
        )
        self._ca_certs: dict[str, tuple[tuple[x509.Certificate, ...], bytes]] = {}
        self._certreps: tuple[int, ThreadPoolExecutor] | None = None

    def answer(
        self,
        name: str,
        operation: str,
        message: bytes | None,
        *,
        admit: Callable[[str], None] | None = None,
    ) -> ScepAnswer:
        """The answer to ``operation`` on provisioner ``name``; an ``OstiaryError`` becomes
        the caller's problem document (unknown provisioner, unknown operation, no message).

        ``admit`` is given the name of the provisioner, once found, before a PKIOperation's
        message is decrypted; it raises to refuse (the server's per-provisioner limit).
        """
        if operation == "PKIOperation":
            if not message:
                raise BadRequest("PKIOperation needs a message")
            provisioner = self._checked.load(name, what="this SCEP path")
            if admit is not None:
                admit(provisioner.name)
            return ScepAnswer(200, self._operation(provisioner, message), PKI_MESSAGE)
        if operation not in ("GetCACaps", "GetCACert"):
            raise BadRequest(
                f"unknown SCEP operation {operation[:40]!r}: GetCACaps, GetCACert or PKIOperation"
            )
        return self._describe(self._described.load(name, what="this SCEP path"), operation)

    def answer_now(self, name: str, operation: str) -> ScepAnswer | None:
        """GetCACaps or GetCACert from memory (no I/O), or None: then call :meth:`answer`."""
        if operation not in ("GetCACaps", "GetCACert"):
            return None
        provisioner = self._described.fresh(name)
        return None if provisioner is None else self._describe(provisioner, operation)

    def _describe(self, provisioner: ScepProvisioner, operation: str) -> ScepAnswer:
        if operation == "GetCACaps":
            return ScepAnswer(200, _CAPABILITIES, TEXT)
        chain = tuple(
            c for c in (provisioner.ra_certificate, self.ca.issuer, *self._roots()) if c is not None
        )
        kept = self._ca_certs.get(provisioner.name)
        # the same objects while nothing changes: the comparison is by identity, no DER made
        if kept is None or kept[0] != chain:
            kept = (chain, certs_only(list(chain)))
            self._ca_certs[provisioner.name] = kept
        return ScepAnswer(200, kept[1], CA_RA_CERT)

    def _roots(self) -> list[x509.Certificate]:
        return [self.authority.ca.root]

    def _ra_key(self, provisioner: ScepProvisioner) -> rsa.RSAPrivateKey:
        """The RA key, unsealed once per process (PBKDF2 at 600,000 iterations is slow)."""
        with self._lock:
            kept = self._keys.get(provisioner.name)
            if kept is None or kept[0] != provisioner.encrypted_ra_key:
                kept = (provisioner.encrypted_ra_key, provisioner.load_ra_key(self._password))
                self._keys[provisioner.name] = kept
            return kept[1]

    def _certrep_thread(self) -> ThreadPoolExecutor:
        """The thread that builds SUCCESS CertReps while their commits wait for the disk
        (one per process: a thread started before a fork is not in the child).
        """
        with self._lock:
            if self._certreps is None or self._certreps[0] != os.getpid():
                pool = ThreadPoolExecutor(1, thread_name_prefix="scep-certrep")
                self._certreps = (os.getpid(), pool)
            return self._certreps[1]

    def _operation(self, provisioner: ScepProvisioner, der: bytes) -> bytes:
        try:
            outer = read_envelope(der)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        request = outer.envelope
        ra_certificate, ra_key = provisioner.ra_certificate, self._ra_key(provisioner)
        try:
            message = open_message(outer, ra_certificate=ra_certificate, ra_key=ra_key)
            success = _Success(message.envelope, ra_certificate, ra_key, self._certrep_thread)
            outcome = self._dispatch(provisioner, message, success.start)
        except ScepFailure as failure:
            logger.warning(
                "SCEP %s: %s refused (%s): %s",
                provisioner.name,
                outer.message_type.name,
                failure.fail_info.name,
                failure.reason,
            )
            return cert_rep(
                request,
                PkiStatus.FAILURE,
                ra_certificate=ra_certificate,
                ra_key=ra_key,
                fail_info=failure.fail_info,
                fail_text=failure.reason,
            )
        request = message.envelope
        logger.info(
            "SCEP %s: %s %s (transaction %s, %s, %s)",
            provisioner.name,
            message.message_type.name,
            "pending" if outcome.pending else "issued",
            request.transaction_id[:40],
            request.cipher,
            request.digest,
        )
        if outcome.certificate is None:
            return cert_rep(
                request, PkiStatus.PENDING, ra_certificate=ra_certificate, ra_key=ra_key
            )
        return success.reply(outcome.certificate)

    def _ours(self, envelope: Envelope) -> bool:
        """Whether the request is signed with a certificate of our issuing CA."""
        issuer = self.authority.issuer.certificate
        if envelope.signer.issuer != issuer.subject:
            return False
        try:
            envelope.signer.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def _dispatch(
        self, provisioner: ScepProvisioner, message: PkiMessage, while_committing: WhileCommitting
    ) -> Outcome:
        envelope = message.envelope
        try:
            if message.message_type == MessageType.CERT_POLL:
                return poll(self.authority, provisioner, envelope.transaction_id)
            try:
                csr = x509.load_der_x509_csr(message.content)
            except ValueError:
                raise ScepFailure(FailInfo.BAD_REQUEST, "the envelope holds no PKCS#10") from None
            # certmonger (and macOS) renew with a PKCSReq signed by the current certificate
            renewal = message.message_type == MessageType.RENEWAL_REQ or self._ours(envelope)
            if renewal:
                _check_time(envelope.signer, self.authority.clock())
                return renew(
                    self.authority,
                    provisioner,
                    envelope.transaction_id,
                    csr,
                    envelope.signer,
                    ca=self.ca,
                    while_committing=while_committing,
                )
            return enroll(
                self.authority, provisioner, envelope.transaction_id, csr,
                ca=self.ca, while_committing=while_committing,
            )  # fmt: skip
        except NotFound as exc:
            raise ScepFailure(FailInfo.BAD_CERT_ID, str(exc)) from None
        except Unavailable:
            # Temporary (the audit log, the signer): an HTTP 503 with Retry-After, which
            # clients retry; a FAILURE CertRep is final for them, PENDING would promise a
            # transaction that was not recorded.
            raise
        except OstiaryError as exc:
            raise ScepFailure(FailInfo.BAD_REQUEST, str(exc)) from None


class _Success:
    """The SUCCESS CertRep of one request, started while its certificate's transaction
    commits: the commit waits for the disk (an ``fsync``, the GIL released), and the
    CertRep (an RSA signature and encryption, ~0.6 ms at one device at a time) is built in
    the responder's CertRep thread meanwhile, not after it. It is still sent only once the
    commit is durable: :meth:`reply` is called with the certificate the write returned.
    """

    def __init__(
        self,
        request: Envelope,
        ra_certificate: x509.Certificate,
        ra_key: rsa.RSAPrivateKey,
        thread: Callable[[], ThreadPoolExecutor],
    ) -> None:
        self._request = request
        self._ra = (ra_certificate, ra_key)
        self._thread = thread
        self._started: tuple[x509.Certificate, Future[bytes]] | None = None

    def start(self, certificate: x509.Certificate) -> None:
        """Start building the CertRep for ``certificate`` (once: a batch run again starts it
        again with the same certificate).
        """
        if self._started is not None and self._started[0] is certificate:
            return
        try:
            future = self._thread().submit(self._build, certificate)
        except RuntimeError:  # the interpreter is stopping: :meth:`reply` builds it
            return
        self._started = (certificate, future)

    def reply(self, certificate: x509.Certificate) -> bytes:
        """The CertRep for ``certificate``: the one started, if it was for this certificate
        (not for another, as when a repeat of the transaction answers with the first one),
        else built now. A build not yet begun is taken back and done here.
        """
        started = self._started
        if started is not None and started[0] is certificate and not started[1].cancel():
            return started[1].result()
        return self._build(certificate)

    def _build(self, certificate: x509.Certificate) -> bytes:
        ra_certificate, ra_key = self._ra
        return cert_rep(
            self._request,
            PkiStatus.SUCCESS,
            ra_certificate=ra_certificate,
            ra_key=ra_key,
            issued=certificate,
        )


def _load(store: Store, issuer: object, *, what: str) -> ScepProvisioner:
    """:func:`load_scep_provisioner` as a :class:`~ostiary.provisioners.cache.Loader`."""
    if not isinstance(issuer, str):
        raise NotFound(f"{what} names no SCEP provisioner")
    return load_scep_provisioner(store, issuer)


def _check_time(certificate: x509.Certificate, now: datetime) -> None:
    """A RenewalReq is signed with a certificate valid now (failInfo badTime otherwise)."""
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise ScepFailure(FailInfo.BAD_TIME, "the signing certificate is not valid now")
