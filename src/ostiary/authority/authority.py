"""The Authority: authorize -> issue -> record -> audit, and revoke and publish.

Every certificate Ostiary makes passes through :meth:`Authority.issue`, whatever the entry
path (offline ``ca sign``, the REST API, later ACME and the console): the core pipeline builds
and signs it, then the certificate row and its audit entry (and, for ``POST /sign``, the spent
one-time token) are committed in one transaction, and only then is the certificate returned.
If the audit entry cannot be written, the transaction fails and nothing is issued (fail
closed). Refusals are audited too.

The record goes through :meth:`Store.write <ostiary.store.Store.write>`: Core statements,
committed together with the records of concurrent issuances (group commit). A replayed token
does not fail the others: its unit writes a "token.reused" entry instead of the certificate,
and :class:`~ostiary.core.errors.TokenReused` is raised once that entry is committed; the
certificate signed for it is dropped, never recorded nor returned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from sqlalchemy.orm import Session

from ostiary.authority.folder import CAMaterial
from ostiary.authority.lineage import revoke_same_key, successor_for_renewal
from ostiary.authority.recording import check_spent, issuance_unit, token_use
from ostiary.core.ca import key_id_hex
from ostiary.core.crl import RevokedEntry, build_crl
from ostiary.core.encoding import serial_hex
from ostiary.core.errors import (
    KeyCompromised,
    NotFound,
    OstiaryError,
    SignerUnavailable,
    Superseded,
    TokenReused,
)
from ostiary.core.issuance import (
    Authorization,
    IssuingCA,
    RequestCheck,
    build_leaf_certificate,
    issue_certificate,
)
from ostiary.store import (
    AuditLog,
    Batch,
    CertificateRecord,
    CertificateRepository,
    Store,
    TokenSpend,
    active_intermediate_key_id,
    next_crl_number,
)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Authority:
    """Issues, revokes and publishes for one issuing CA, recording everything in a store."""

    def __init__(self, ca: CAMaterial, store: Store, *, clock: Clock = utc_now) -> None:
        self.ca = ca
        self.store = store
        self.clock = clock
        #: Every intermediate whose key is at hand, by key identifier (hex): the one that
        #: issues and the retiring ones, which still sign CRLs and OCSP for their leaves.
        self.issuers: dict[str, IssuingCA] = {
            key_id_hex(issuer.certificate): issuer for issuer in ca.issuers
        }
        self.issuer: IssuingCA = ca.issuer
        self.issuer_key_id = key_id_hex(ca.intermediate)
        self.use_issuer(_recorded_active(store) or self.issuer_key_id)
        #: Called with the serial number after each revocation made here has committed
        #: (the OCSP cache drops that serial's answers at once; see ocsp_service).
        self.revocation_listeners: list[Callable[[int], None]] = []
        #: Called with ``(provisioner, audit event)`` once an issuance or renewal made here
        #: has committed (``/metrics``).
        self.issuance_listeners: list[Callable[[str | None, str], None]] = []
        #: Called with ``(provisioner, error code)`` for each refusal by the pipeline.
        self.denial_listeners: list[Callable[[str | None, str], None]] = []

    def refresh_issuers(self, load: Callable[[], Sequence[IssuingCA]] | None = None) -> bool:
        """Issue with the intermediate the database names now (after a rotation anywhere);
        ``load`` gives the folder's intermediates again, with their keys, when it is not one
        of :attr:`issuers`. Whether the issuing CA changed.
        """
        active = _recorded_active(self.store)
        if active is None or active == self.issuer_key_id:
            return False
        if active not in self.issuers and load is not None:
            for issuer in load():
                self.issuers.setdefault(key_id_hex(issuer.certificate), issuer)
        self.use_issuer(active)
        return True

    def record_of(self, session: Session, serial_number: int) -> CertificateRecord:
        """The certificate ``serial_number`` issued by any of this CA's intermediates (the
        issuing one first; each lookup uses the (issuer, serial) key). :class:`NotFound`.
        """
        repository = CertificateRepository(session)
        for key_id in sorted(self.issuers, key=lambda k: k != self.issuer_key_id):
            try:
                return repository.get(serial_number, key_id)
            except NotFound:
                continue
        raise NotFound(
            f"no certificate with serial {serial_hex(serial_number)}",
            serial=serial_hex(serial_number),
        )

    def use_issuer(self, key_id: str) -> None:
        """Issue with the intermediate ``key_id`` from now on (the database names it:
        :func:`ostiary.store.active_intermediate_key_id`).
        """
        issuer = self.issuers.get(key_id)
        if issuer is None:
            raise SignerUnavailable(
                f"the database names intermediate {key_id} as the issuing one, but its key "
                "is not in this CA folder: copy certs/intermediates and secrets/intermediates "
                "from the folder where 'ostiary ca intermediate rotate' ran"
            )
        self.issuer = issuer
        self.issuer_key_id = key_id

    def issue(
        self,
        csr: x509.CertificateSigningRequest,
        authorization: Authorization,
        *,
        actor: str | None,
        checks: Sequence[RequestCheck] = (),
        event: str = "certificate.issued",
        details: dict[str, Any] | None = None,
        token: TokenSpend | None = None,
        renewed_from: int | None = None,
        then: Callable[[Batch, x509.Certificate], None] | None = None,
    ) -> x509.Certificate:
        """Issue through the one pipeline, then commit the certificate with its audit entry.

        ``then`` writes what the caller records with the certificate, in its transaction
        (an ACME order's serial): if it raises, nothing of this issuance is recorded.

        ``token``, a verified one-time token that pays for this certificate, is spent in the
        same transaction; :class:`TokenReused` if it was spent before (audited). A key
        reported compromised is refused in that transaction (:class:`KeyCompromised`,
        audited), whatever the entry path.
        """
        now = self.clock()
        try:
            certificate = issue_certificate(csr, authorization, self.issuer, now=now, checks=checks)
        except OstiaryError as exc:
            self._audit_denial(exc, authorization, actor=actor, details=details)
            raise
        unit = issuance_unit(
            certificate,
            authorization,
            actor=actor,
            event=event,
            details=details,
            at=now,
            token=token,
            renewed_from=renewed_from,
            then=then,
        )
        try:
            recorded = self.store.write(unit, token=token_use(token, now))
        except (KeyCompromised, Superseded) as exc:
            self._audit_denial(exc, authorization, actor=actor, details=details)
            raise
        self._decided(recorded, authorization, event)
        check_spent(recorded, token)
        return certificate

    def issue_for_key(
        self,
        public_key: CertificatePublicKeyTypes,
        authorization: Authorization,
        *,
        actor: str | None,
        event: str,
        details: dict[str, Any] | None = None,
    ) -> x509.Certificate:
        """:meth:`issue` for a key that cannot sign a CSR (a TPM's restricted attestation
        key, whose possession the caller proved otherwise): recorded and audited alike.
        """
        now = self.clock()
        try:
            certificate = build_leaf_certificate(public_key, authorization, self.issuer, now=now)
        except OstiaryError as exc:
            self._audit_denial(exc, authorization, actor=actor, details=details)
            raise
        unit = issuance_unit(
            certificate, authorization, actor=actor, event=event, details=details, at=now,
            token=None,
        )  # fmt: skip
        self.store.write(unit)
        self._decided(True, authorization, event)
        return certificate

    async def issue_async(
        self,
        csr: x509.CertificateSigningRequest,
        authorization: Authorization,
        *,
        actor: str | None,
        token: TokenSpend | None = None,
        deadline: float | None = None,
    ) -> x509.Certificate:
        """:meth:`issue` for a coroutine (the server's ``POST /sign``); ``deadline`` (a
        :func:`time.monotonic` time) bounds the record's wait (:meth:`Store.write_async
        <ostiary.store.Store.write_async>`).

        A key held in this process signs in the event loop's thread (tens of microseconds,
        less than a thread switch); a key elsewhere (PKCS#11) signs in a worker thread. The
        record goes through :meth:`Store.write_async <ostiary.store.Store.write_async>`.
        """
        now = self.clock()
        try:
            if self.signs_in_process:
                certificate = issue_certificate(csr, authorization, self.issuer, now=now)
            else:
                certificate = await asyncio.to_thread(
                    issue_certificate, csr, authorization, self.issuer, now=now
                )
        except OstiaryError as exc:
            await asyncio.to_thread(
                self._audit_denial, exc, authorization, actor=actor, details=None
            )
            raise
        unit = issuance_unit(
            certificate,
            authorization,
            actor=actor,
            event="certificate.issued",
            details=None,
            at=now,
            token=token,
        )
        try:
            recorded = await self.store.write_async(
                unit, token=token_use(token, now), deadline=deadline
            )
        except KeyCompromised as exc:
            await asyncio.to_thread(
                self._audit_denial, exc, authorization, actor=actor, details=None
            )
            raise
        self._decided(recorded, authorization, "certificate.issued")
        check_spent(recorded, token)
        return certificate

    @property
    def signs_in_process(self) -> bool:
        """Whether the issuing key is a pyca/cryptography key in this process (not a token)."""
        return type(self.issuer.private_key).__module__.startswith("cryptography.")

    def renew(
        self,
        current: x509.Certificate,
        authorization: Authorization,
        public_key: CertificatePublicKeyTypes,
        *,
        actor: str | None,
        csr: x509.CertificateSigningRequest | None = None,
        details: dict[str, Any] | None = None,
        then: Callable[[Batch, x509.Certificate], None] | None = None,
    ) -> x509.Certificate:
        """Issue the successor of ``current``, audited as ``certificate.renewed``; ``then``
        as in :meth:`issue`.

        ``authorization`` and ``public_key`` come from
        :func:`ostiary.provisioners.renewal_authorization`, which checked that ``current`` is
        ours, renewable and not revoked. With ``csr`` (a new key) the whole pipeline runs as
        in :meth:`issue`; without, ``public_key`` is the current key, whose possession the
        caller verified (an mTLS handshake, or a token signed by it), and the certificate is
        built for it directly. ``then`` as in :meth:`issue` (not called for a repeated
        renewal, which records nothing new).
        """
        details = {"renewed_from": serial_hex(current.serial_number), **(details or {})}
        repeated = self._repeated_renewal(current, authorization, public_key, actor, details)
        if repeated is not None:
            return repeated
        if csr is not None:
            return self.issue(
                csr,
                authorization,
                actor=actor,
                event="certificate.renewed",
                details=details,
                renewed_from=current.serial_number,
                then=then,
            )
        now = self.clock()
        try:
            certificate = build_leaf_certificate(public_key, authorization, self.issuer, now=now)
        except OstiaryError as exc:
            self._audit_denial(exc, authorization, actor=actor, details=details)
            raise
        unit = issuance_unit(
            certificate,
            authorization,
            actor=actor,
            event="certificate.renewed",
            details=details,
            at=now,
            token=None,
            renewed_from=current.serial_number,
            then=then,
        )
        try:
            self.store.write(unit)
        except (KeyCompromised, Superseded) as exc:
            self._audit_denial(exc, authorization, actor=actor, details=details)
            raise
        self._decided(True, authorization, "certificate.renewed")
        return certificate

    def _repeated_renewal(
        self,
        current: x509.Certificate,
        authorization: Authorization,
        public_key: CertificatePublicKeyTypes,
        actor: str | None,
        details: dict[str, Any],
    ) -> x509.Certificate | None:
        """A renewal of a certificate that already has a successor (docs/client.md).

        Only the newest certificate of a lineage renews, so that a stolen key cannot fan out
        certificates from an unexpired ancestor. The one exception is a client that retries
        because the answer was lost: asking with the successor's own key while the
        successor is valid gets that same successor back (nothing new is certified: the
        caller proved possession of that very key). Anything else is :class:`Superseded`.
        """
        successor = successor_for_renewal(self.store, current, public_key, now=self.clock())
        if successor is None:
            return None
        if successor.certificate is not None:
            self.audit(
                "certificate.renewal_repeated",
                actor=actor,
                target=successor.serial,
                details={**details, "note": "the same successor, sent again"},
            )
            return successor.certificate
        error = successor.refusal()
        self._audit_denial(error, authorization, actor=actor, details=details)
        raise error

    def _decided(self, recorded: bool, authorization: Authorization, event: str) -> None:
        """Tell the listeners: issued (``event``), or refused for a spent token."""
        if recorded:
            for issued in self.issuance_listeners:
                issued(authorization.provisioner, event)
        else:
            for denied in self.denial_listeners:
                denied(authorization.provisioner, TokenReused.code)

    def _audit_denial(
        self,
        error: OstiaryError,
        authorization: Authorization,
        *,
        actor: str | None,
        details: dict[str, Any] | None,
    ) -> None:
        for denied in self.denial_listeners:
            denied(authorization.provisioner, error.code)
        self.audit(
            "certificate.denied",
            actor=actor,
            target=authorization.subject.rfc4514_string(),
            details={
                "reason": error.detail,
                "code": error.code,
                "provisioner": authorization.provisioner,
                **(details or {}),
            },
        )

    def revoke(
        self, serial_number: int, *, reason: x509.ReasonFlags, actor: str | None
    ) -> CertificateRecord:
        """Mark a certificate revoked (once) and audit it; OCSP and the next CRL show it."""
        now = self.clock()
        with self.store.transaction() as session:
            repository = CertificateRepository(session)
            issuer_key_id = self.record_of(session, serial_number).issuer_key_id
            record = repository.revoke(
                serial_number, reason=reason.value, at=now, issuer_key_id=issuer_key_id
            )
            audit = AuditLog(session)
            audit.append(
                "certificate.revoked",
                actor=actor,
                target=serial_hex(serial_number),
                details={"reason": reason.value, "subject": record.subject},
                at=now,
            )
            # After the entry above (which takes the audit chain's lock, as every issuance
            # does first): no issuance can commit between this sweep and the mark.
            same_key = (
                revoke_same_key(session, audit, record, actor=actor, at=now)
                if reason == x509.ReasonFlags.key_compromise
                else []
            )
        for serial in (serial_number, *same_key):
            for listener in self.revocation_listeners:
                listener(serial)
        return record

    def build_crl(self) -> bytes:
        """A fresh, complete CRL (DER) for the issuing CA with the next CRL number.

        The number is taken in its own short transaction and the entries are read in a
        read-only one, so that streaming a long list never holds SQLite's write lock (which
        would stall issuance). thisUpdate is read after the entries, so no listed revocation
        is later than it.
        """
        with self.store.transaction() as session:
            number = next_crl_number(session, self.issuer_key_id)
        with self.store.transaction(read_only=True) as session:
            entries = [
                RevokedEntry(serial, revoked_at, _reason(reason))
                for serial, revoked_at, reason in CertificateRepository(session).revoked_entries(
                    self.issuer_key_id
                )
            ]
        now = self.clock().replace(microsecond=0)
        return build_crl(
            self.issuer.certificate,
            self.issuer.private_key,
            entries,
            crl_number=number,
            this_update=now,
            next_update=now + self.ca.config.crl_lifetime,
        )

    def audit(
        self,
        event: str,
        *,
        actor: str | None,
        target: str | None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Write one audit entry in its own transaction."""
        with self.store.transaction() as session:
            AuditLog(session).append(
                event, actor=actor, target=target, details=details or {}, at=self.clock()
            )


def _recorded_active(store: Store) -> str | None:
    with store.transaction(read_only=True) as session:
        return active_intermediate_key_id(session)


def _reason(value: str | None) -> x509.ReasonFlags | None:
    if value is None:
        return None
    return x509.ReasonFlags(value)
