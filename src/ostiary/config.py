"""The one settings model: ``ostiary.toml`` in a CA folder.

Read once at the entry point (CLI or server start) and passed down; frozen. Durations are
written as people write them (``15m``, ``24h``, ``7d``) and validated into timedeltas.
"""

from __future__ import annotations

import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import tomli_w
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from ostiary.core.errors import BadRequest, NotFound
from ostiary.core.keys import KeyType
from ostiary.core.lifetime import Lifetime, format_duration, parse_duration


def _to_timedelta(value: Any) -> Any:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    return value


Duration = Annotated[
    timedelta,
    BeforeValidator(_to_timedelta),
    PlainSerializer(format_duration, return_type=str),
]

CONFIG_FILE = "ostiary.toml"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Claims(_Frozen):
    """Default lifetime claims for certificates issued by this CA (provisioners may narrow)."""

    min_lifetime: Duration = Field(timedelta(minutes=5), description="shortest certificate")
    default_lifetime: Duration = Field(timedelta(hours=24), description="when none is asked")
    max_lifetime: Duration = Field(timedelta(days=30), description="longest certificate")
    allow_renewal: bool = Field(True, description="holders may renew their certificates")
    allow_renewal_after_expiry: bool = Field(
        False, description="an expired certificate may still be renewed"
    )

    @model_validator(mode="after")
    def _ordered(self) -> Claims:
        self.lifetime()  # raises if min <= default <= max does not hold
        return self

    def lifetime(self) -> Lifetime:
        return Lifetime(self.min_lifetime, self.default_lifetime, self.max_lifetime)


class Pkcs11Settings(_Frozen):
    """Where a ``kms = "pkcs11"`` CA's keys are: a PKCS#11 module, a token, key labels."""

    module: str = Field(min_length=1, description="path of the PKCS#11 module (.so)")
    token: str = Field(min_length=1, max_length=32, description="the token's label")
    root_key: str = Field("ostiary-root", min_length=1, description="label of the root key")
    intermediate_key: str = Field(
        "ostiary-intermediate", min_length=1, description="label of the issuing key"
    )
    sealing_key: str = Field(
        "ostiary-seal",
        min_length=1,
        description="label of the secret key that seals provisioner keys (docs/hsm.md)",
    )


class CAConfig(_Frozen):
    """Everything a CA folder's ``ostiary.toml`` may say."""

    name: str = Field(min_length=1, max_length=64, description="the CA's name (root CN prefix)")
    key_type: KeyType = Field(KeyType.P256, description="key type of the root and intermediate")
    address: str = Field("127.0.0.1:8443", description="HOST:PORT the HTTPS server listens on")
    http_address: str | None = Field(
        None, description="HOST:PORT for plain-HTTP CRL/OCSP/AIA (relying parties fetch CRLs so)"
    )
    url: str | None = Field(
        None,
        description="base URL put in certificates for CRL (CDP), OCSP and caIssuers (AIA)",
    )
    dns: tuple[str, ...] = Field((), description="DNS names of the server certificate")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: SQLite 'ostiary.db' in the CA folder"
    )
    kms: Literal["file", "pkcs11"] = Field("file", description="where CA keys live")
    pkcs11: Pkcs11Settings | None = Field(None, description="the token, when kms = 'pkcs11'")
    claims: Claims = Field(default_factory=Claims)
    crl_lifetime: Duration = Field(timedelta(hours=24), description="CRL nextUpdate - thisUpdate")
    ocsp_lifetime: Duration = Field(
        timedelta(hours=1), description="OCSP response nextUpdate - thisUpdate"
    )
    policies: tuple[str, ...] = Field((), description="certificate policy OIDs for every leaf")
    permitted_names: tuple[str, ...] = Field((), description="name constraints (permitted)")
    excluded_names: tuple[str, ...] = Field((), description="name constraints (excluded)")

    @model_validator(mode="after")
    def _kms_settings(self) -> CAConfig:
        if self.kms == "pkcs11" and self.pkcs11 is None:
            raise ValueError("kms = 'pkcs11' needs a [pkcs11] table (module, token)")
        if self.kms != "pkcs11" and self.pkcs11 is not None:
            raise ValueError("a [pkcs11] table is only allowed with kms = 'pkcs11'")
        return self

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("the URL must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("address", "http_address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            parse_address(value)
        return value

    @field_validator("policies")
    @classmethod
    def _oids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for oid in value:
            parts = oid.split(".")
            if len(parts) < 2 or not all(p.isdigit() for p in parts):
                raise ValueError(f"not an OID: {oid!r}")
        return value


def parse_address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 in brackets) as a (host, port) pair."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise ValueError(f"not HOST:PORT: {value!r}")
    return host.strip("[]"), int(port)


#: The plain-HTTP listener's port when none is configured.
DEFAULT_HTTP_PORT = 8080


def default_http_address(https_address: str) -> str:
    """The plain-HTTP address when none is configured: the HTTPS host, port 8080.

    A HTTPS port of 0 (any free port) gives 0 too.
    """
    try:
        host, port = parse_address(https_address)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{0 if port == 0 else DEFAULT_HTTP_PORT}"


def published_base_url(config: CAConfig) -> str:
    """Where the CA's certificates point: ``url``, else its plain-HTTP listener (the one
    ``ca serve`` takes when none is configured).
    """
    if config.url:
        return config.url.rstrip("/")
    return f"http://{config.http_address or default_http_address(config.address)}"


def load_config(path: Path) -> CAConfig:
    """Read and validate a CA folder's ``ostiary.toml``."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFound(f"no CA configuration at {path}: run 'ostiary ca init' first") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadRequest(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise BadRequest(f"{path}: not UTF-8 text (TOML files are UTF-8)") from None
    try:
        return CAConfig.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(f"{path}: {describe_validation_error(exc)}") from None


def dump_config(config: CAConfig) -> str:
    return tomli_w.dumps(config.model_dump(mode="json", exclude_none=True))


def describe_validation_error(exc: ValidationError) -> str:
    """One line from pydantic's error list: ``field: message; other: message``."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "value"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
