"""Root fingerprints as people copy them, and the constant-time check a bootstrap relies on."""

from __future__ import annotations

import hmac
import re

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ostiary.core.errors import BadRequest

_SEPARATORS = re.compile(r"[\s:]")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def normalize_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as 64 lower-case hex digits; case, colons and spaces ignored.

    ``SHA256:`` / ``sha256=`` prefixes (as ``openssl x509 -fingerprint`` prints) are accepted.
    """
    value = text.strip().lower()
    for prefix in ("sha256 fingerprint=", "sha256:", "sha256="):
        value = value.removeprefix(prefix)
    value = _SEPARATORS.sub("", value)
    if not _SHA256_HEX.fullmatch(value):
        raise BadRequest(
            f"not a SHA-256 fingerprint: {text!r} (expected 64 hex digits, colons optional)"
        )
    return value


def fingerprint_matches(certificate: x509.Certificate, expected: str) -> bool:
    """Whether ``certificate``'s SHA-256 fingerprint is ``expected`` (compared in constant time)."""
    actual = certificate.fingerprint(hashes.SHA256())
    return hmac.compare_digest(actual, bytes.fromhex(normalize_fingerprint(expected)))
