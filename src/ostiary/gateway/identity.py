"""Who is on the other end: the client certificate as the gateway reports it upstream, and the
route rules it is checked against.

Upstream headers (any incoming header of these names is removed first, so a client can never
speak for itself):

- ``X-Forwarded-Client-Cert``: Envoy's format, ``Hash=<sha256 hex>;Subject="...";URI=...;
  DNS=...;Cert="<url-encoded PEM>"`` (one URI=/DNS= pair per name).
- ``X-Client-Subject`` (RFC 4514), ``X-Client-Serial`` (hex), ``X-Client-SAN`` (``kind:value``
  names separated by ``, ``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from ostiary.core.encoding import serial_hex
from ostiary.core.names import format_general_name, sans_of
from ostiary.gateway.config import Route

#: Header names the gateway owns, lower case: it sets all but ``x-client-cert`` (which our
#: nginx snippet sets) and drops any a client sends (:mod:`ostiary.gateway.headers`).
IDENTITY_HEADERS = frozenset(
    {
        b"x-forwarded-client-cert",
        b"x-client-cert",
        b"x-client-subject",
        b"x-client-serial",
        b"x-client-san",
        b"x-client-verify",
    }
)


@dataclass(frozen=True)
class ClientIdentity:
    """A verified client certificate, with the issuing CA that was found for it."""

    certificate: x509.Certificate
    issuer: x509.Certificate

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()

    @property
    def serial(self) -> str:
        return serial_hex(self.certificate.serial_number)

    @property
    def sans(self) -> tuple[str, ...]:
        return tuple(format_general_name(n) for n in sans_of(self.certificate.extensions))

    @property
    def policy_oids(self) -> frozenset[str]:
        try:
            policies = self.certificate.extensions.get_extension_for_class(
                x509.CertificatePolicies
            ).value
        except x509.ExtensionNotFound:
            return frozenset()
        return frozenset(p.policy_identifier.dotted_string for p in policies)

    @cached_property
    def _headers(self) -> tuple[tuple[bytes, bytes], ...]:
        return (
            (b"x-forwarded-client-cert", self.xfcc().encode("ascii")),
            (b"x-client-subject", _header_text(self.subject)),
            (b"x-client-serial", self.serial.encode("ascii")),
            (b"x-client-san", _header_text(", ".join(self.sans))),
            (b"x-client-verify", b"SUCCESS"),
        )

    @cached_property
    def header_block(self) -> bytes:
        """The identity headers sent upstream, as lines of a request head (``name: value``
        and CRLF each); made once per identity, which the gateway keeps per certificate.
        """
        return b"".join(name + b": " + value + b"\r\n" for name, value in self._headers)

    def xfcc(self) -> str:
        """Envoy's ``x-forwarded-client-cert`` element for this certificate."""
        digest = self.certificate.fingerprint(hashes.SHA256()).hex()
        pem = self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
        parts = [f"Hash={digest}", f'Subject="{_quoted(self.subject)}"']
        for name in sans_of(self.certificate.extensions):
            if isinstance(name, x509.UniformResourceIdentifier):
                parts.append(f"URI={name.value}")
            elif isinstance(name, x509.DNSName):
                parts.append(f"DNS={name.value}")
        parts.append(f'Cert="{quote(pem, safe="")}"')
        return ";".join(parts)

    def log_text(self) -> str:
        return f'subject="{self.subject}" serial={self.serial}'


def route_for(path: str, routes: Sequence[Route]) -> Route | None:
    """The route with the longest prefix covering ``path`` by whole segments, if any.

    ``path`` is the canonical path (:func:`ostiary.gateway.target.canonical_target`): a rule
    checked on anything else is a bypass. A route's prefix ``/vault`` covers ``/vault`` and
    ``/vault/...``, never ``/vaultx``; with ``case_insensitive`` also ``/VAULT/...``.
    """
    best: Route | None = None
    folded: str | None = None
    for route in routes:
        prefix = route.prefix.rstrip("/")
        candidate = path
        if route.case_insensitive:
            if folded is None:
                folded = path.lower()
            candidate, prefix = folded, prefix.lower()
        if prefix == "" or candidate == prefix or candidate.startswith(prefix + "/"):
            if best is None or len(route.prefix) > len(best.prefix):
                best = route
    return best


def route_refusal(identity: ClientIdentity, route: Route) -> str | None:
    """Why ``route`` refuses ``identity`` (a short reason for logs and metrics), or None."""
    if route.subjects and not any(fnmatch.fnmatchcase(identity.subject, p) for p in route.subjects):
        return "subject-not-allowed"
    if route.san_patterns and not any(
        fnmatch.fnmatchcase(name.lower(), p.lower())
        for name in identity.sans
        for p in route.san_patterns
    ):
        return "san-not-allowed"
    if route.policy_oids and not set(route.policy_oids) <= identity.policy_oids:
        return "policy-missing"
    return None


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _header_text(text: str) -> bytes:
    """Header-safe bytes: non-ASCII and control characters percent-encoded."""
    return "".join(c if 0x20 <= ord(c) < 0x7F else quote(c, safe="") for c in text).encode("ascii")
