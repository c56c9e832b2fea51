"""Bootstrap: learn a CA's root from its URL and a fingerprint given out of band.

The first request cannot be verified (we have no root yet), so its answer is trusted only
through the fingerprint: the root is kept only if its SHA-256 matches, compared in constant
time. The CA's other roots (after ``ca root rotate``) are adopted only through a
cross-certificate signed by that root (:mod:`ostiary.client.root_trust`), never because the
unverified answer listed them. Then the same server must prove it holds a TLS certificate
under a trusted root, over a verified connection, before anything is saved.
"""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from cryptography import x509

from ostiary.client.api import OstiaryClient
from ostiary.client.config import ClientConfig, normalize_ca_url
from ostiary.client.errors import CAUnavailable, error_from_problem
from ostiary.client.fingerprints import fingerprint_matches, normalize_fingerprint
from ostiary.client.root_trust import adopt_roots
from ostiary.core.ca import issued_by
from ostiary.core.encoding import load_certificate
from ostiary.core.errors import InvalidCertificate, MalformedInput


def bootstrap_client_config(
    ca_url: str, fingerprint: str, *, timeout: float = 30.0
) -> ClientConfig:
    """The CA at ``ca_url`` with its root whose SHA-256 is ``fingerprint``, checked.

    Raises :class:`InvalidCertificate` if no root served there has that fingerprint or the
    server's TLS certificate does not chain to it. Saves nothing: the caller does.
    """
    url = normalize_ca_url(ca_url)
    expected = normalize_fingerprint(fingerprint)
    roots, cross = _fetch_roots_unverified(url, timeout)
    root = _matching_root(roots, expected, url)
    adoption = adopt_roots([root], roots, cross, now=datetime.now(UTC))
    with OstiaryClient(url, [root, *adoption.adopted], timeout=timeout) as verified:
        verified.health()
    return ClientConfig(
        url, root, adoption.adopted, adoption.cross_certificates, refused_roots=adoption.refused
    )


def _fetch_roots_unverified(
    url: str, timeout: float
) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    """``GET /roots`` without verifying TLS: the fingerprint check stands in for it."""
    try:
        with httpx.Client(verify=False, timeout=timeout, trust_env=False) as http:
            response = http.get(f"{url}/roots")
    except httpx.TransportError as exc:
        raise CAUnavailable(f"cannot reach the CA at {url}: {exc or type(exc).__name__}") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_error:
        raise error_from_problem(response.status_code, body)
    pems = body.get("roots") if isinstance(body, dict) else None
    cross = body.get("cross_certificates", []) if isinstance(body, dict) else None
    if not isinstance(pems, list) or not all(isinstance(p, str) for p in pems):
        raise MalformedInput(f"{url}/roots did not answer with a list of root certificates")
    if not isinstance(cross, list) or not all(isinstance(p, str) for p in cross):
        raise MalformedInput(f"{url}/roots: cross_certificates is not a list of certificates")
    return [load_certificate(pem.encode()) for pem in pems], [
        load_certificate(pem.encode()) for pem in cross
    ]


def _matching_root(roots: list[x509.Certificate], expected: str, url: str) -> x509.Certificate:
    matches = [root for root in roots if fingerprint_matches(root, expected)]
    if not matches:
        raise InvalidCertificate(
            f"no root served by {url} has the fingerprint {expected}: nothing was saved "
            "(check the fingerprint, or someone may be in the middle)",
            fingerprint=expected,
        )
    root = matches[0]
    if not _is_self_signed_ca(root):
        raise InvalidCertificate("the certificate with that fingerprint is not a root CA")
    return root


def _is_self_signed_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca and issued_by(certificate, [certificate])
