"""What the routes work with: one object per app, built by the server runner or the tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

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
from ostiary.provisioners import CAIdentity, ProvisionerCache
from ostiary.provisioners.acme import AcmeProvisioner, load_acme_provisioner_named
from ostiary.provisioners.jwk import JWKProvisioner
from ostiary.provisioners.manage import load_token_provisioner
from ostiary.scep import ScepResponder
from ostiary.server.metrics import ServerMetrics
from ostiary.signers.sealing import Sealer


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
    def chain_pem(self) -> tuple[str, ...]:
        """The issuing CA certificate, PEM, as every answer with a new certificate carries it.

        The issuer is fixed for the authority's lifetime: encoded once, not per issuance.
        """
        issuer = self.authority.issuer.certificate
        return (issuer.public_bytes(serialization.Encoding.PEM).decode("ascii"),)

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
                material.root, material.intermediate, claims=material.config.claims
            ),
            crl=CrlPublisher(authority),
            root_crl=RootCrlFile(material.paths.root_crl),
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
