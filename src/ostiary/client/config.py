"""The client's defaults: which CA to talk to and which root to trust.

``ostiary bootstrap`` writes them to the user's configuration folder, never to a CA folder::

    $OSTIARY_CLIENT_CONFIG, else $XDG_CONFIG_HOME/ostiary, else ~/.config/ostiary
    ├── client.toml    ca_url and the root's SHA-256 fingerprint
    ├── root.crt       the trusted root (PEM)
    └── roots.pem      roots learnt later through cross-certificates, with those
                       cross-certificates (:mod:`ostiary.client.root_trust`)

Loading checks that ``root.crt`` still has the fingerprint recorded beside it, so a root
swapped on disk is refused rather than trusted; the roots of ``roots.pem`` are trusted only
while a cross-certificate beside them, signed by ``root.crt`` (or by a root it vouched for),
still vouches for them.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ostiary.client.fingerprints import fingerprint_matches, normalize_fingerprint
from ostiary.client.root_trust import adopt_roots
from ostiary.config import describe_validation_error
from ostiary.core.ca import fingerprint_sha256, issued_by
from ostiary.core.encoding import load_certificate_chain
from ostiary.core.errors import BadRequest, InvalidCertificate, NotFound

#: Environment variable naming the client's configuration folder (tests, several profiles).
CLIENT_CONFIG_ENV = "OSTIARY_CLIENT_CONFIG"
CLIENT_CONFIG_FILE = "client.toml"
ROOT_FILE = "root.crt"
ROOTS_FILE = "roots.pem"


def client_config_dir() -> Path:
    """``$OSTIARY_CLIENT_CONFIG``, else ``$XDG_CONFIG_HOME/ostiary``, else ``~/.config/ostiary``."""
    explicit = os.environ.get(CLIENT_CONFIG_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".config"
    return base / "ostiary"


def normalize_ca_url(url: str) -> str:
    """The CA's base URL without a trailing slash; only ``https://`` is accepted."""
    value = url.strip().rstrip("/")
    if not value.startswith("https://") or len(value) <= len("https://"):
        raise BadRequest(f"the CA URL must start with https://, not {url!r}")
    return value


class _ClientSettings(BaseModel):
    """What ``client.toml`` says."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ca_url: str = Field(description="base URL of the CA server (https)")
    fingerprint: str = Field(description="SHA-256 fingerprint of the trusted root, hex")

    @field_validator("ca_url")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            return normalize_ca_url(value)
        except BadRequest as exc:
            raise ValueError(exc.detail) from None

    @field_validator("fingerprint")
    @classmethod
    def _fingerprint(cls, value: str) -> str:
        try:
            return normalize_fingerprint(value)
        except BadRequest as exc:
            raise ValueError(exc.detail) from None


@dataclass(frozen=True)
class ClientConfig:
    """A CA to talk to: its URL and the root its TLS certificate (and ours) chains to."""

    ca_url: str
    root: x509.Certificate
    #: Roots adopted through cross-certificates (``roots.pem``), and those certificates.
    next_roots: tuple[x509.Certificate, ...] = ()
    cross_certificates: tuple[x509.Certificate, ...] = ()
    #: Why roots the CA listed were not adopted (shown by ``ostiary bootstrap``).
    refused_roots: tuple[str, ...] = field(default=(), compare=False)

    @property
    def fingerprint(self) -> str:
        return fingerprint_sha256(self.root)

    @property
    def trusted_roots(self) -> list[x509.Certificate]:
        return [self.root, *self.next_roots]

    def dump_next_roots(self) -> bytes:
        """``roots.pem``: the adopted roots, then the cross-certificates that vouch for them."""
        return b"".join(
            c.public_bytes(serialization.Encoding.PEM)
            for c in (*self.next_roots, *self.cross_certificates)
        )

    def dump_settings(self) -> str:
        """``client.toml`` for this configuration."""
        return tomli_w.dumps({"ca_url": self.ca_url, "fingerprint": self.fingerprint})

    def dump_root(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)


def load_client_config(folder: Path | None = None) -> ClientConfig:
    """The saved defaults; :class:`NotFound` when bootstrap was never run."""
    folder = folder or client_config_dir()
    settings_path = folder / CLIENT_CONFIG_FILE
    try:
        text = settings_path.read_text(encoding="utf-8")
        root_data = (folder / ROOT_FILE).read_bytes()
    except FileNotFoundError:
        raise NotFound(
            f"no client configuration in {folder}: run 'ostiary bootstrap --ca-url URL "
            "--fingerprint SHA256' or give --ca-url and --root"
        ) from None
    try:
        settings = _ClientSettings.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise BadRequest(f"{settings_path}: not valid TOML: {exc}") from None
    except ValidationError as exc:
        raise BadRequest(f"{settings_path}: {describe_validation_error(exc)}") from None
    root = load_certificate_chain(root_data)[0]
    if not fingerprint_matches(root, settings.fingerprint):
        raise InvalidCertificate(
            f"{folder / ROOT_FILE} is not the root bootstrap saved (fingerprint differs): "
            "run 'ostiary bootstrap' again"
        )
    return _with_next_roots(ClientConfig(settings.ca_url, root), folder / ROOTS_FILE)


def _with_next_roots(config: ClientConfig, path: Path) -> ClientConfig:
    try:
        certificates = load_certificate_chain(path.read_bytes())
    except FileNotFoundError:
        return config
    roots = [c for c in certificates if issued_by(c, [c])]
    cross = [c for c in certificates if c not in roots]
    adoption = adopt_roots([config.root], roots, cross, now=datetime.now(UTC))
    return ClientConfig(config.ca_url, config.root, adoption.adopted, adoption.cross_certificates)
