"""The CA folder: configuration, certificates, encrypted keys and the database, on disk.

::

    $OSTIARY_HOME (default ~/.ostiary)
    ├── ostiary.toml            the settings (ostiary.config.CAConfig)
    ├── certs/root.crt          the root certificate (PEM)
    ├── certs/intermediate.crt  the issuing CA certificate (PEM)
    ├── certs/root.crl          the root's CRL (DER), signed offline (authority.root_crl)
    ├── certs/intermediates/    intermediates made by ``ca intermediate rotate``, KEYID.crt
    ├── secrets/root.key        encrypted PKCS#8, 0600
    ├── secrets/intermediate.key
    ├── secrets/intermediates/  their keys, KEYID.key (a token CA: KEYID.label, in certs/)
    ├── certs/roots/            roots made by ``ca root rotate``, KEYID.crt
    ├── certs/cross/            their cross-certificates, SUBJECTKEYID-by-SIGNERKEYID.crt
    ├── secrets/roots/          their keys, KEYID.key
    └── ostiary.db              SQLite (WAL), unless database_url points elsewhere
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ostiary.config import CONFIG_FILE, CAConfig, dump_config, load_config
from ostiary.core.ca import (
    NameConstraints,
    create_intermediate_certificate,
    create_root_certificate,
)
from ostiary.core.encoding import load_certificate
from ostiary.core.errors import BadRequest, Conflict, NotFound
from ostiary.core.issuance import CAUrls, IssuingCA
from ostiary.core.keys import generate_private_key
from ostiary.core.names import parse_subject
from ostiary.signers.base import Signer
from ostiary.signers.files import FileSigner

#: Paths the server serves the CA's public objects under; certificates point at them.
CRL_PATH = "/crl"
ROOT_CRL_PATH = "/root.crl"
OCSP_PATH = "/ocsp"
INTERMEDIATE_PATH = "/intermediate.crt"
ROOT_PATH = "/root.crt"


def default_ca_dir() -> Path:
    """``$OSTIARY_HOME``, else ``~/.ostiary``."""
    env = os.environ.get("OSTIARY_HOME")
    return Path(env).expanduser() if env else Path.home() / ".ostiary"


def leaf_urls(base: str | None) -> CAUrls:
    """Where leaves point: the intermediate's CRL, the OCSP responder, the intermediate."""
    if not base:
        return CAUrls()
    return CAUrls(crl=base + CRL_PATH, ocsp=base + OCSP_PATH, ca_issuers=base + INTERMEDIATE_PATH)


def rotated_leaf_urls(base: str | None, key_id: str) -> CAUrls:
    """Where leaves of a rotated intermediate point: its own CRL and certificate by key id."""
    if not base:
        return CAUrls()
    return CAUrls(
        crl=f"{base}{CRL_PATH}/{key_id}",
        ocsp=base + OCSP_PATH,
        ca_issuers=f"{base}/intermediate/{key_id}.crt",
    )


def intermediate_urls(base: str | None, rotated_root_key_id: str | None = None) -> CAUrls:
    """Where the intermediate points: the root's CRL and the root certificate; under a root
    made by ``ca root rotate``, that root's CRL (``/crl/KEYID``) only.
    """
    if not base:
        return CAUrls()
    if rotated_root_key_id is not None:
        return CAUrls(crl=f"{base}{CRL_PATH}/{rotated_root_key_id}")
    return CAUrls(crl=base + ROOT_CRL_PATH, ca_issuers=base + ROOT_PATH)


@dataclass(frozen=True)
class CAPaths:
    """The files of one CA folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def root_certificate(self) -> Path:
        return self.root / "certs" / "root.crt"

    @property
    def intermediate_certificate(self) -> Path:
        return self.root / "certs" / "intermediate.crt"

    @property
    def root_crl(self) -> Path:
        return self.root / "certs" / "root.crl"

    @property
    def root_key(self) -> Path:
        return self.root / "secrets" / "root.key"

    @property
    def intermediate_key(self) -> Path:
        return self.root / "secrets" / "intermediate.key"

    @property
    def rotated_certificates(self) -> Path:
        return self.root / "certs" / "intermediates"

    @property
    def rotated_keys(self) -> Path:
        return self.root / "secrets" / "intermediates"

    def rotated_key(self, key_id: str) -> Path:
        return self.rotated_keys / f"{key_id}.key"

    def rotated_intermediates(self) -> list[x509.Certificate]:
        """The intermediates made by ``ca intermediate rotate`` (by file name: key id)."""
        if not self.rotated_certificates.is_dir():
            return []
        return _read_folder(self.rotated_certificates)

    @property
    def root_certificates_dir(self) -> Path:
        return self.root / "certs" / "roots"

    @property
    def root_keys(self) -> Path:
        return self.root / "secrets" / "roots"

    def rotated_root_key(self, key_id: str) -> Path:
        return self.root_keys / f"{key_id}.key"

    @property
    def cross_certificates_dir(self) -> Path:
        return self.root / "certs" / "cross"

    def root_crl_of(self, key_id: str, first_root: x509.Certificate) -> Path:
        """``certs/root.crl`` for the first root, ``certs/roots/KEYID.crl`` for later ones."""
        if key_id == _key_id(first_root):
            return self.root_crl
        return self.root_certificates_dir / f"{key_id}.crl"

    def rotated_roots(self) -> list[x509.Certificate]:
        """The roots made by ``ca root rotate``, oldest first."""
        roots = _read_folder(self.root_certificates_dir)
        return sorted(roots, key=lambda root: root.not_valid_before_utc)

    def cross_certificates(self) -> list[x509.Certificate]:
        """The cross-certificates between the roots (:mod:`ostiary.authority.root_rollover`)."""
        return _read_folder(self.cross_certificates_dir)

    @property
    def database(self) -> Path:
        return self.root / "ostiary.db"

    def database_url(self, config: CAConfig) -> str:
        return config.database_url or f"sqlite:///{self.database}"

    def exists(self) -> bool:
        return self.config.exists()


def load_root_key_file(material: CAMaterial, password: bytes) -> Signer:
    """The root key of a file CA: ``secrets/root.key``, unlocked by the CA password."""
    return FileSigner.load(material.paths.root_key, password)


@dataclass(frozen=True)
class IssuerKey:
    """A rotated intermediate (:mod:`ostiary.authority.rollover`) and its signer."""

    certificate: x509.Certificate
    signer: Signer


@dataclass(frozen=True)
class CAMaterial:
    """A loaded CA folder: settings, certificates and the signer of the issuing key.

    ``root_loader`` opens the root key where this CA keeps it: the key file here; a token CA
    (:mod:`ostiary.authority.token_ca`, which builds on this module) gives its own.
    """

    paths: CAPaths
    config: CAConfig
    root: x509.Certificate
    intermediate: x509.Certificate
    signer: Signer
    root_loader: Callable[[CAMaterial, bytes], Signer] = field(
        default=load_root_key_file, repr=False
    )
    #: Intermediates made by ``ca intermediate rotate``, oldest first. Which one issues is
    #: recorded in the database (:class:`~ostiary.authority.authority.Authority` reads it).
    rotated: tuple[IssuerKey, ...] = ()

    @property
    def issuer(self) -> IssuingCA:
        """The folder's first intermediate (``certs/intermediate.crt``)."""
        return IssuingCA(
            certificate=self.intermediate,
            private_key=self.signer.private_key,
            chain=(self.intermediate, self.root),
            urls=leaf_urls(self.config.url),
            policies=self.config.policies,
        )

    @property
    def issuers(self) -> tuple[IssuingCA, ...]:
        """Every intermediate whose key is at hand: the first one, then the rotated ones."""
        rotated = (
            IssuingCA(
                certificate=key.certificate,
                private_key=key.signer.private_key,
                # after a root rotation, the cross-certificate before the new root: how a
                # client of the old root reaches it
                chain=(
                    key.certificate,
                    *self.cross_chain(key.certificate),
                    self.root_of(key.certificate),
                ),
                urls=rotated_leaf_urls(self.config.url, _key_id(key.certificate)),
                policies=self.config.policies,
            )
            for key in self.rotated
        )
        return (self.issuer, *rotated)

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        """Every root, oldest first: ``certs/root.crt``, then those of ``ca root rotate``
        (read from the folder each time: a rotation elsewhere shows at once).
        """
        return (self.root, *self.paths.rotated_roots())

    @property
    def newest_root(self) -> x509.Certificate:
        """The root that signs new intermediates (the last one ``ca root rotate`` made)."""
        return self.roots[-1]

    def root_of(self, intermediate: x509.Certificate) -> x509.Certificate:
        """The root whose key signed ``intermediate`` (by key identifier)."""
        try:
            aki = intermediate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
        except x509.ExtensionNotFound:
            return self.root
        for root in self.roots:
            if aki.value.key_identifier == bytes.fromhex(_key_id(root)):
                return root
        return self.root

    def cross_chain(self, intermediate: x509.Certificate) -> tuple[x509.Certificate, ...]:
        """The cross-certificates that carry the key of ``intermediate``'s root, signed by
        another root: what a TLS chain adds so that clients of an older root reach it.
        """
        root = self.root_of(intermediate)
        return tuple(
            cross
            for cross in self.paths.cross_certificates()
            if cross.public_key() == root.public_key()
        )

    @property
    def database_url(self) -> str:
        return self.paths.database_url(self.config)

    def load_root_signer(self, password: bytes) -> Signer:
        """The root key, loaded only for the rare operations that need it (root CRL)."""
        return self.root_loader(self, password)

    def load_newest_root_signer(self, password: bytes) -> Signer:
        """The newest root's key (a new intermediate, a root rotation): the root key until
        ``ca root rotate`` made another, then ``secrets/roots/KEYID.key``.
        """
        newest = self.newest_root
        if newest is self.root:
            return self.load_root_signer(password)
        return FileSigner.load(self.paths.rotated_root_key(_key_id(newest)), password)


def init_ca_folder(
    paths: CAPaths, config: CAConfig, password: bytes, *, now: datetime
) -> CAMaterial:
    """Create a new CA folder: keys, root, intermediate, settings. Refuses an existing one."""
    if paths.exists() or paths.root_key.exists() or paths.root_certificate.exists():
        raise Conflict(f"a CA already exists in {paths.root}: refusing to overwrite it")
    paths.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    (paths.root / "secrets").mkdir(exist_ok=True, mode=0o700)
    (paths.root / "certs").mkdir(exist_ok=True)

    constraints = NameConstraints(config.permitted_names, config.excluded_names)
    root_key = generate_private_key(config.key_type)
    intermediate_key = generate_private_key(config.key_type)
    root = create_root_certificate(
        parse_subject(f"CN={config.name} Root CA"), root_key, now=now, name_constraints=constraints
    )
    intermediate = create_intermediate_certificate(
        parse_subject(f"CN={config.name} Intermediate CA"),
        intermediate_key.public_key(),
        root_certificate=root,
        root_key=root_key,
        now=now,
        root_urls=intermediate_urls(config.url),
    )
    FileSigner.create(paths.root_key, root_key, password)
    signer = FileSigner.create(paths.intermediate_key, intermediate_key, password)
    paths.root_certificate.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    paths.intermediate_certificate.write_bytes(
        intermediate.public_bytes(serialization.Encoding.PEM)
    )
    paths.config.write_text(dump_config(config), encoding="utf-8")
    return CAMaterial(paths, config, root, intermediate, signer)


def load_ca_folder(paths: CAPaths, password: bytes) -> CAMaterial:
    """Load settings, certificates and the issuing key; the password unlocks the key file.

    A ``kms = "pkcs11"`` CA is opened by :func:`ostiary.authority.token_ca.load_token_ca_folder`
    instead (docs/hsm.md).
    """
    config, root, intermediate = load_ca_public(paths)
    if config.kms == "pkcs11":
        raise BadRequest("this CA keeps its keys in a PKCS#11 token: open it with its PIN")
    signer = FileSigner.load(paths.intermediate_key, password)
    rotated = tuple(
        IssuerKey(certificate, FileSigner.load(paths.rotated_key(_key_id(certificate)), password))
        for certificate in paths.rotated_intermediates()
    )
    return CAMaterial(paths, config, root, intermediate, signer, rotated=rotated)


def load_ca_public(paths: CAPaths) -> tuple[CAConfig, x509.Certificate, x509.Certificate]:
    """Settings and certificates only: for commands that need no key."""
    config = load_config(paths.config)
    return (
        config,
        _read_certificate(paths.root_certificate),
        _read_certificate(paths.intermediate_certificate),
    )


def _key_id(certificate: x509.Certificate) -> str:
    return certificate.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier
    ).value.digest.hex()


def _read_folder(folder: Path) -> list[x509.Certificate]:
    if not folder.is_dir():
        return []
    return [_read_certificate(path) for path in sorted(folder.glob("*.crt"))]


def _read_certificate(path: Path) -> x509.Certificate:
    try:
        return load_certificate(path.read_bytes())
    except FileNotFoundError:
        raise NotFound(f"{path} is missing: the CA folder is incomplete") from None
