"""The gateway's settings: one frozen model, read from a TOML file, with command-line flags
laid over it (a flag given wins over the file).

A minimal ``gateway.toml``::

    listen = "0.0.0.0:8443"
    upstream = "http://127.0.0.1:8080"
    ca_roots = ["/etc/ostiary/ca.pem"]      # root (anchor) and, optionally, intermediates
    cert = "/etc/ostiary/gateway.crt"
    key = "/etc/ostiary/gateway.key"

    [[routes]]
    prefix = "/admin"
    subjects = ["CN=alice*"]
    san_patterns = ["email:*@example.com"]
    policy_oids = ["1.3.6.1.4.1.99999.1"]
"""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ostiary.config import describe_validation_error
from ostiary.core.errors import BadRequest, MalformedInput, NotFound
from ostiary.gateway.target import canonical_path

Mode = Literal["http", "tcp"]
RevocationMethod = Literal["auto", "ocsp", "crl", "off"]


def parse_host_port(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) into its parts; raises ``ValueError``."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"{value!r} is not HOST:PORT")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    host = host.strip("[]")
    return host, port


class Route(BaseModel):
    """Who may use the paths under ``prefix`` (HTTP mode; in TCP mode only ``/`` applies).

    The prefix matches whole path segments (``/vault`` covers ``/vault`` and ``/vault/x``,
    never ``/vaultx``) of the canonical path (:mod:`ostiary.gateway.target`); it is stored in
    that canonical form. ``case_insensitive`` makes it match ``/VAULT`` too, for an upstream
    that routes without regard to case.

    A certificate passes when every non-empty rule matches: its subject matches one of
    ``subjects``, one of its names matches one of ``san_patterns`` (globs over the
    ``kind:value`` text, e.g. ``email:*@example.com``, ``dns:*.lab``), and it carries every
    OID in ``policy_oids`` (certificatePolicies, RFC 5280 4.2.1.4).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prefix: str = Field(
        "/", description="Path prefix this route covers (whole segments); the longest wins."
    )
    case_insensitive: bool = Field(
        False, description="Match the prefix without regard to ASCII case (/VAULT as /vault)."
    )
    subjects: tuple[str, ...] = Field((), description="Globs over the RFC 4514 subject.")
    san_patterns: tuple[str, ...] = Field((), description="Globs over 'kind:value' names.")
    policy_oids: tuple[str, ...] = Field((), description="Certificate policy OIDs required.")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("a route prefix starts with '/'")
        if "?" in value or "#" in value:
            raise ValueError("a route prefix is a path, without '?' or '#'")
        try:
            return canonical_path(value.encode("utf-8")).decode("ascii")
        except MalformedInput as exc:
            raise ValueError(f"route prefix {value!r}: {exc}") from None

    @field_validator("policy_oids")
    @classmethod
    def _oids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for oid in value:
            parts = oid.split(".")
            if len(parts) < 2 or not all(p.isdigit() for p in parts):
                raise ValueError(f"{oid!r} is not a dotted OID")
        return value


class GatewayConfig(BaseModel):
    """Everything ``ostiary gateway run`` needs; paths are read at start and on reload."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    listen: str = Field("127.0.0.1:8443", description="HOST:PORT to accept TLS on.")
    upstream: str = Field(
        description="http:// or https://HOST:PORT (HTTP mode), tcp://HOST:PORT (TCP mode)."
    )
    upstream_ca: Path | None = Field(
        None, description="PEM roots that verify an https:// upstream (required for https)."
    )
    upstream_cert: Path | None = Field(
        None, description="Client certificate chain (PEM) presented to an https:// upstream."
    )
    upstream_key: Path | None = Field(None, description="Its private key (PEM, unencrypted).")
    workers: int = Field(
        1, ge=1, le=64, description="Worker processes sharing the port (SO_REUSEPORT)."
    )
    renew: bool = Field(
        False, description="Keep cert renewed from our CA (the key is kept; reloaded on change)."
    )
    renew_ca_url: str | None = Field(
        None, description="The CA's URL for renewal (default: saved by 'ostiary bootstrap')."
    )
    renew_root: Path | None = Field(
        None, description="Root (PEM) that verifies the CA (default: saved by bootstrap)."
    )
    renew_expires_in: str | None = Field(
        None, description="Renew when less than this is left (8h, 33%); default a third."
    )
    mode: Mode = "http"
    ca_roots: tuple[Path, ...] = Field(
        description="PEM files: self-signed roots are the anchors, others help build paths."
    )
    cert: Path = Field(description="The gateway's certificate chain (PEM).")
    key: Path = Field(description="The gateway's private key (PEM, unencrypted, 0600).")
    issuer_thumbprints: tuple[str, ...] = Field(
        (), description="Accept only certificates issued by CAs with these SHA-256 hashes."
    )
    revocation: RevocationMethod = Field(
        "auto", description="auto: OCSP from the AIA if present, else the CRL from the CDP."
    )
    revocation_cache_seconds: float = Field(
        30.0, gt=0, le=86400, description="How long a good status is reused before re-asking."
    )
    revocation_grace_seconds: float = Field(
        300.0,
        ge=0,
        le=7 * 86400,
        description="How long a stale status is trusted when the "
        "CA cannot be reached; past it, connections are refused (fail closed).",
    )
    revocation_timeout_seconds: float = Field(5.0, gt=0, le=60)
    revocation_feed: str = Field(
        "auto",
        description="Follow the CA's signed revocation feed: auto (beside the CRL the client "
        "certificate names), off, or its http(s) URL.",
    )
    routes: tuple[Route, ...] = (Route(),)
    metrics_listen: str | None = Field(
        None, description="Loopback HOST:PORT serving Prometheus text at /metrics."
    )
    access_log: bool = True
    reload_interval_seconds: float = Field(
        2.0, gt=0, le=3600, description="How often the certificate/key/trust files are polled."
    )
    handshake_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=120,
        description="A client connection whose TLS handshake is not done this long after it "
        "was accepted (one that sends nothing, or half a ClientHello) is closed.",
    )
    idle_timeout_seconds: float = Field(120.0, gt=0, le=86400)
    max_connections: int = Field(
        4096,
        ge=1,
        le=1_000_000,
        description="Client connections each worker keeps open, those in their TLS handshake "
        "included; one past it is closed at once, before any TLS (raise ulimit -n to match).",
    )

    @field_validator("listen", "metrics_listen")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            parse_host_port(value)
        return value

    @field_validator("metrics_listen")
    @classmethod
    def _loopback(cls, value: str | None) -> str | None:
        if value is not None:
            host, _ = parse_host_port(value)
            if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
                raise ValueError("metrics are served on a loopback address only")
        return value

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https", "tcp") or not parts.hostname or not parts.port:
            raise ValueError("upstream is http://, https:// or tcp://HOST:PORT, port included")
        return value

    @field_validator("revocation_feed")
    @classmethod
    def _feed(cls, value: str) -> str:
        if value in ("auto", "off"):
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("revocation_feed is auto, off, or an http(s):// URL")
        return value

    @field_validator("issuer_thumbprints")
    @classmethod
    def _thumbprints(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(v.replace(":", "").lower() for v in value)
        for item in cleaned:
            if len(item) != 64 or any(c not in "0123456789abcdef" for c in item):
                raise ValueError(f"{item!r} is not a SHA-256 thumbprint (64 hex digits)")
        return cleaned

    @field_validator("ca_roots")
    @classmethod
    def _roots(cls, value: tuple[Path, ...]) -> tuple[Path, ...]:
        if not value:
            raise ValueError("give at least one CA root file")
        return value

    def model_post_init(self, context: Any, /) -> None:
        upstream_scheme = urlsplit(self.upstream).scheme
        if self.mode == "tcp" and upstream_scheme != "tcp":
            raise ValueError("TCP mode needs a tcp://HOST:PORT upstream")
        if self.mode == "http" and upstream_scheme == "tcp":
            raise ValueError("HTTP mode needs an http:// or https:// upstream")
        if upstream_scheme == "https" and self.upstream_ca is None:
            raise ValueError("an https:// upstream needs upstream_ca (the roots that verify it)")
        if upstream_scheme != "https" and self.upstream_ca is not None:
            raise ValueError("upstream_ca is for an https:// upstream")
        if (self.upstream_cert is None) != (self.upstream_key is None):
            raise ValueError("upstream_cert and upstream_key go together")
        if self.upstream_cert is not None and upstream_scheme != "https":
            raise ValueError("upstream_cert is for an https:// upstream")
        if self.workers > 1 and parse_host_port(self.listen)[1] == 0:
            raise ValueError("several workers share one fixed port: give it in listen")


def load_gateway_config(path: Path | None, overrides: dict[str, Any]) -> GatewayConfig:
    """The file's settings (if any) with ``overrides`` (flags given on the command line,
    ``None`` meaning "not given") laid over them; one readable error if anything is wrong.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NotFound(f"no gateway configuration at {path}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"{path}: not valid TOML: {exc}") from None
        base = path.parent
        for key in ("cert", "key", "upstream_ca", "upstream_cert", "upstream_key", "renew_root"):
            if isinstance(data.get(key), str):
                data[key] = str(base / data[key])
        if isinstance(data.get("ca_roots"), list):
            data["ca_roots"] = [
                str(base / p) if isinstance(p, str) else p for p in data["ca_roots"]
            ]
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return GatewayConfig(**data)
    except ValidationError as exc:
        raise BadRequest(describe_validation_error(exc)) from None
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
