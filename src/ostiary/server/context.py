"""What the routes work with: one object per app, built by the server runner or the tests."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi import Request

from ostiary.acme.validation.base import ValidationSettings
from ostiary.authority.authority import Authority
from ostiary.authority.ocsp_service import OcspService
from ostiary.authority.publisher import CrlPublisher
from ostiary.authority.remote_signing import RemoteSigning
from ostiary.authority.revocation_feed import RevocationFeed
from ostiary.authority.root_crl import RootCrlFile
from ostiary.authority.ssh import SSHAuthority
from ostiary.core.ca import key_id_hex
from ostiary.core.errors import OstiaryError
from ostiary.core.issuance import IssuingCA
from ostiary.provisioners import CAIdentity, ProvisionerCache
from ostiary.provisioners.acme import AcmeProvisioner, load_acme_provisioner_named
from ostiary.provisioners.jwk import JWKProvisioner
from ostiary.provisioners.manage import load_token_provisioner
from ostiary.scep import ScepResponder
from ostiary.server.limits import Limits
from ostiary.server.metrics import ServerMetrics
from ostiary.signers.sealing import Sealer
from ostiary.store import issuer_key_id_of

logger = logging.getLogger("ostiary.server")


@dataclass(frozen=True)
class ServerContext:
    """The authority and the publishers the routes answer from."""

    authority: Authority
    ca: CAIdentity
    crl: CrlPublisher
    root_crl: RootCrlFile
    ocsp: OcspService
    #: Remote signing (client assertions); None when the server was started without it.
    signing: RemoteSigning | None = None
    #: Token provisioners kept in memory (``POST /sign``); None loads them per request.
    provisioners: ProvisionerCache[JWKProvisioner] | None = None
    #: ``acme`` provisioners kept in memory (every ACME request); None loads them per request.
    acme_provisioners: ProvisionerCache[AcmeProvisioner] | None = None
    #: SSH certificates (docs/ssh.md); None when the CA has no SSH CA keys.
    ssh: SSHAuthority | None = None
    #: Where ACME challenge validation reaches out (ports, resolver; settable for tests).
    acme_validation: ValidationSettings = field(default_factory=ValidationSettings)
    #: SCEP (``/scep/NAME``); None when the server was started without the CA password.
    scep: ScepResponder | None = None
    #: Opens secrets sealed with the CA password (ACME EAB keys); None without it.
    sealer: Sealer | None = None
    #: Prometheus metrics (``ca serve --metrics-address``); None: nothing is counted.
    metrics: ServerMetrics | None = None

    @cached_property
    def limits(self) -> Limits:
        """The per-address limiters, shared by both listeners and the direct ``/sign``."""
        metrics = self.metrics
        return Limits.default(
            on_refused=metrics.count_rate_limited if metrics is not None else None
        )

    def chain_of(self, certificate: x509.Certificate) -> tuple[str, ...]:
        """The CA certificate that issued ``certificate``, PEM, as every answer with a new
        certificate carries it: one of the intermediates (the issuing one, or, for a
        certificate issued before a rotation, the one that issued it).

        Encoded once per intermediate, not per issuance.
        """
        key_id = issuer_key_id_of(certificate)
        cached = self._chains.get(key_id)
        if cached is None:
            found = self.authority.issuers.get(key_id)
            issuer = found.certificate if found is not None else self.authority.issuer.certificate
            cached = (issuer.public_bytes(serialization.Encoding.PEM).decode("ascii"),)
            self._chains[key_id] = cached
        return cached

    @cached_property
    def _chains(self) -> dict[str, tuple[str, ...]]:
        return {}

    @cached_property
    def _crls(self) -> dict[str, CrlPublisher]:
        return {key_id_hex(self.authority.ca.issuer.certificate): self.crl}

    def crl_of(self, key_id: str) -> CrlPublisher | None:
        """The CRL publisher of the intermediate with this key id (``/crl/KEYID``); the
        folder's first intermediate's is :attr:`crl` (``/crl``). None for no such one.
        """
        publisher = self._crls.get(key_id)
        if publisher is None:
            issuer = self.authority.issuers.get(key_id)
            if issuer is None:
                return None
            publisher = self._crls.setdefault(key_id, CrlPublisher(self.authority, issuer=issuer))
        return publisher

    def rotated_root_crl(self, key_id: str) -> bytes | None:
        """The CRL of a root made by ``ca root rotate`` (``/crl/KEYID``, its intermediates'
        CDP); None when no such root exists (or it has no CRL yet).
        """
        paths = self.authority.ca.paths
        if not any(key_id_hex(root) == key_id for root in paths.rotated_roots()):
            return None
        path = paths.root_crl_of(key_id, self.authority.ca.root)
        return RootCrlFile(path, self.authority.store, key_id).current()

    def follow_rotations(self, load: Callable[[], Sequence[IssuingCA]]) -> None:
        """Switch issuers whenever the audit watch sees an intermediate rotated anywhere;
        ``load`` opens the folder's intermediates again (the new key among them).
        """

        def follow() -> None:
            try:
                self.switch_issuer(load)
            except OstiaryError as exc:  # the watch thread must go on watching revocations
                logger.error("cannot switch to the new intermediate: %s", exc.detail)

        self.ocsp.watch.rotation_listeners.append(follow)

    def switch_issuer(self, load: Callable[[], Sequence[IssuingCA]] | None = None) -> None:
        """After a rotation anywhere (the audit watch saw it): issue with the intermediate
        the database names, and accept its leaves in renewal and holder tokens.
        """
        if not self.authority.refresh_issuers(load):
            return
        issuers = [i.certificate for i in self.authority.issuers.values()]
        identity = replace(
            self.ca,
            issuers=(
                self.authority.issuer.certificate,
                *(i for i in issuers if i != self.authority.issuer.certificate),
            ),
        )
        object.__setattr__(self, "ca", identity)  # frozen for the routes; changed only here

    @cached_property
    def feed(self) -> RevocationFeed:
        """The revocation feed, woken by this process's revocations and by the OCSP cache's
        audit-log poll (revocations made elsewhere).
        """
        feed = RevocationFeed(self.authority)
        self.ocsp.watch.listeners.append(feed.wake)
        return feed

    @classmethod
    def for_authority(
        cls, authority: Authority, *, ocsp: OcspService | None = None
    ) -> ServerContext:
        """The usual wiring: everything derived from the authority and its CA folder."""
        material = authority.ca
        return cls(
            authority=authority,
            ca=CAIdentity.from_certificates(
                material.root,
                authority.issuer.certificate,
                claims=material.config.claims,
                others=[i.certificate for i in authority.issuers.values()],
            ),
            crl=CrlPublisher(authority),
            root_crl=RootCrlFile(
                material.paths.root_crl, authority.store, key_id_hex(material.root)
            ),
            ocsp=ocsp or OcspService(authority),
            provisioners=ProvisionerCache(authority.store, load_token_provisioner),
            acme_provisioners=ProvisionerCache(authority.store, load_acme_provisioner_named),
        )


def server_context(request: Request) -> ServerContext:
    """FastAPI dependency: the context of the app serving ``request``."""
    context: ServerContext = request.app.state.ostiary
    return context


async def current_context(request: Request) -> ServerContext:
    """:func:`server_context` as a coroutine dependency.

    FastAPI runs a plain ``def`` dependency in its thread pool: for a lookup this small, the
    thread switch is most of the cost (a noticeable share of a whole ``POST /sign``).
    """
    return server_context(request)
