"""Certificates the CA server issues to itself: its TLS server certificate and its delegated
OCSP responder certificate (RFC 6960 section 4.2.2.2).

Each is a fresh key held only in memory and a short-lived certificate for it, issued from the
intermediate through :meth:`Authority.issue` (so it is recorded and audited like any other)
and renewed once two thirds of its lifetime have passed. Every replica makes its own at
start; nothing is written to disk, so a restart simply issues new ones.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ostiary.authority.authority import Authority
from ostiary.core.issuance import Authorization
from ostiary.core.keys import signature_hash_for
from ostiary.core.lifetime import Lifetime

#: Renew when this share of the lifetime has passed.
RENEW_AFTER = 2 / 3
#: Who the audit log names as having asked.
ACTOR = "ca-server"


@dataclass(frozen=True)
class SelfIssuedSpec:
    """What to issue: ``purpose`` names it in the audit log (``tls-server``, ``ocsp``)."""

    purpose: str
    subject: x509.Name
    names: tuple[x509.GeneralName, ...]
    profile: str
    lifetime: timedelta


@dataclass(frozen=True)
class SelfIssued:
    """A certificate, then the CA certificate that issued it, and the private key."""

    chain: tuple[x509.Certificate, ...]
    private_key: ec.EllipticCurvePrivateKey

    @property
    def certificate(self) -> x509.Certificate:
        return self.chain[0]

    def renew_at(self) -> datetime:
        """When two thirds of the certificate's lifetime have passed."""
        start = self.certificate.not_valid_before_utc
        end = self.certificate.not_valid_after_utc
        return start + (end - start) * RENEW_AFTER


class RenewingCertificate:
    """A self-issued certificate that is renewed when due (thread-safe)."""

    def __init__(self, authority: Authority, spec: SelfIssuedSpec) -> None:
        self._authority = authority
        self._spec = spec
        self._lock = threading.Lock()
        self._current: SelfIssued | None = None

    @property
    def spec(self) -> SelfIssuedSpec:
        return self._spec

    def current(self) -> SelfIssued:
        """The certificate in use, renewed first if it is due (or was never issued)."""
        current = self._current
        if current is not None and self._authority.clock() < current.renew_at():
            return current
        with self._lock:
            current = self._current
            if current is None or self._authority.clock() >= current.renew_at():
                current = self._issue()
                self._current = current
            return current

    def due_in(self) -> timedelta:
        """How long until the next renewal (zero if due now)."""
        current = self._current
        if current is None:
            return timedelta()
        return max(timedelta(), current.renew_at() - self._authority.clock())

    def _issue(self) -> SelfIssued:
        spec = self._spec
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(spec.subject)
            .sign(key, signature_hash_for(key))
        )
        authorization = Authorization(
            subject=spec.subject,
            names=spec.names,
            profile=spec.profile,
            lifetime=Lifetime(
                minimum=min(timedelta(minutes=5), spec.lifetime),
                default=spec.lifetime,
                maximum=spec.lifetime,
            ),
        )
        certificate = self._authority.issue(
            csr,
            authorization,
            actor=ACTOR,
            details={"purpose": spec.purpose, "host": socket.gethostname()},
        )
        issuer = self._authority.issuer.certificate
        # after a root rotation, the cross-certificate lets a client of the old root follow
        cross = self._authority.ca.cross_chain(issuer)
        return SelfIssued((certificate, issuer, *cross), key)


__all__ = ["RENEW_AFTER", "RenewingCertificate", "SelfIssued", "SelfIssuedSpec"]
