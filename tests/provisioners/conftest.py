"""Fixtures for the provisioner tests: a real CA folder, its Authority on a store, a forger.

The CA folder is made once per module with Ostiary's own ``init_ca_folder``; every test gets
a fresh SQLite database (and, for the replica tests, each backend of ``database_url``). The
clock is fixed at :data:`NOW`: nothing here reads the real time.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from joserfc import jws

from ostiary.authority.authority import Authority
from ostiary.authority.folder import CAMaterial, CAPaths, init_ca_folder
from ostiary.config import CAConfig
from ostiary.core.issuance import Authorization
from ostiary.core.lifetime import Lifetime
from ostiary.core.names import parse_san, parse_subject
from ostiary.provisioners import (
    JWK_TYPE,
    CAIdentity,
    JWKProvisioner,
    ProvisionerClaims,
    add_jwk_provisioner,
)
from ostiary.provisioners._jose import _AllowlistRegistry, import_private_key, new_token_id
from ostiary.store import ProvisionerRepository, Store, migrate, sqlite_url_for

from ..conftest import NOW

PASSWORD = b"correct horse battery staple"


def make_csr(
    common_name: str = "host.lab.example",
    sans: tuple[str, ...] = (),
    key: CertificateIssuerPrivateKeyTypes | None = None,
) -> x509.CertificateSigningRequest:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(parse_subject(common_name))
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([parse_san(s) for s in sans]), critical=False
        )
    return builder.sign(key, None if _is_ed(key) else hashes.SHA256())  # type: ignore[arg-type]


def _is_ed(key: object) -> bool:
    from cryptography.hazmat.primitives.asymmetric import ed448, ed25519

    return isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def compact(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A compact JWS assembled by hand, for tokens no honest library would sign."""
    return ".".join(
        (
            b64url(json.dumps(header).encode()),
            b64url(json.dumps(claims).encode()),
            b64url(signature),
        )
    )


def sign_compact(
    header: dict[str, Any], claims: dict[str, Any], key: CertificateIssuerPrivateKeyTypes
) -> str:
    """Sign with joserfc under exactly ``header['alg']`` (a forger's honest signature)."""
    registry = _AllowlistRegistry([header["alg"]])  # no warning for the deprecated "EdDSA"
    return jws.serialize_compact(
        header, json.dumps(claims).encode(), import_private_key(key), registry=registry
    )


@dataclass
class Kit:
    """A provisioner on a store, and what a test needs to make tokens right and wrong."""

    authority: Authority
    identity: CAIdentity
    provisioner: JWKProvisioner
    key: ec.EllipticCurvePrivateKey
    now: datetime = NOW
    extra: dict[str, JWKProvisioner] = field(default_factory=dict)

    @property
    def store(self) -> Store:
        return self.authority.store

    def claims(self, **changes: Any) -> dict[str, Any]:
        """Valid sign-token claims; a change to ``None`` removes that claim."""
        issued = int(self.now.timestamp())
        claims: dict[str, Any] = {
            "iss": self.provisioner.name,
            "aud": self.identity.audience("sign"),
            "sub": "host.lab.example",
            "sans": ["dns:host.lab.example"],
            "profile": "client",
            "iat": issued,
            "nbf": issued,
            "exp": issued + 300,
            "jti": new_token_id(),
        }
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def header(self, **changes: Any) -> dict[str, Any]:
        header: dict[str, Any] = {"alg": "ES256", "kid": self.provisioner.kid, "typ": "JWT"}
        header.update(changes)
        return {k: v for k, v in header.items() if v is not None}

    def token(
        self,
        claims: dict[str, Any] | None = None,
        header: dict[str, Any] | None = None,
        key: CertificateIssuerPrivateKeyTypes | None = None,
    ) -> str:
        return sign_compact(header or self.header(), claims or self.claims(), key or self.key)

    def add_provisioner(self, name: str, **options: Any) -> JWKProvisioner:
        claims = options.pop("claims", ProvisionerClaims())
        provisioner = add_jwk_provisioner(
            self.store, name, password=PASSWORD, claims=claims, now=self.now, **options
        )
        self.extra[name] = provisioner
        return provisioner


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> CAMaterial:
    """One CA folder per module, made by ``init_ca_folder`` at :data:`NOW`."""
    paths = CAPaths(tmp_path_factory.mktemp("ca"))
    return init_ca_folder(paths, CAConfig(name="Test"), PASSWORD, now=NOW - timedelta(days=1))


@pytest.fixture
def identity(material: CAMaterial) -> CAIdentity:
    return CAIdentity.from_certificates(
        material.root, material.intermediate, claims=material.config.claims
    )


def _authority(material: CAMaterial, url: str) -> Iterator[Authority]:
    store = Store.from_url(url)
    migrate(store.engine)
    try:
        yield Authority(material, store, clock=lambda: NOW)
    finally:
        store.dispose()


@pytest.fixture
def authority(material: CAMaterial, tmp_path: Path) -> Iterator[Authority]:
    """The Authority of :func:`material` on a fresh SQLite database, clock at :data:`NOW`."""
    yield from _authority(material, sqlite_url_for(tmp_path / "ostiary.db"))


@pytest.fixture(scope="module")
def ci_provisioner() -> tuple[JWKProvisioner, ec.EllipticCurvePrivateKey]:
    """The ``ci`` provisioner (``*.lab.example`` names) and its key, made once per module.

    Sealing and unsealing a key costs the full KDF (600,000 PBKDF2 rounds), so the tests
    store this one record in each fresh database instead of making a new key every time.
    """
    provisioner = JWKProvisioner.create(
        "ci", password=PASSWORD, claims=ProvisionerClaims(allowed_names=("*.lab.example",))
    )
    return provisioner, provisioner.load_private_key(PASSWORD)


def _store_provisioner(store: Store, provisioner: JWKProvisioner) -> None:
    with store.transaction() as session:
        ProvisionerRepository(session).add(
            provisioner.name, type=JWK_TYPE, config=provisioner.to_config(), now=NOW
        )


@pytest.fixture
def kit(
    authority: Authority,
    identity: CAIdentity,
    ci_provisioner: tuple[JWKProvisioner, ec.EllipticCurvePrivateKey],
) -> Kit:
    """A ``ci`` provisioner that may grant ``*.lab.example`` names, on a fresh database."""
    provisioner, key = ci_provisioner
    _store_provisioner(authority.store, provisioner)
    return Kit(authority, identity, provisioner, key)


# --------------------------------------------------------------------------- replicas


@pytest.fixture
def replicas(
    material: CAMaterial,
    identity: CAIdentity,
    database_url: str,
    ci_provisioner: tuple[JWKProvisioner, ec.EllipticCurvePrivateKey],
) -> Iterator[tuple[Kit, Authority]]:
    """A provisioner kit on one replica, and a second Authority (own engine) on the same DB.

    ``database_url`` (tests/conftest.py) runs this on SQLite and on PostgreSQL.
    """
    first = _authority(material, database_url)
    second = _authority(material, database_url)
    authority = next(first)
    other = next(second)
    provisioner, key = ci_provisioner
    _store_provisioner(authority.store, provisioner)
    yield Kit(authority, identity, provisioner, key), other
    for generator in (second, first):
        generator.close()


def client_authorization(
    common_name: str = "alice", *sans: str, provisioner: str | None = "ci", **kwargs: Any
) -> Authorization:
    """An authorization as a provisioner would grant it, for issuing test certificates."""
    kwargs.setdefault("lifetime", Lifetime(default=timedelta(days=7)))
    return Authorization(
        subject=parse_subject(common_name),
        names=tuple(parse_san(s) for s in sans),
        provisioner=provisioner,
        **kwargs,
    )
