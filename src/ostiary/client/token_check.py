"""What the holder can tell about a one-time token, and which CA it asked.

A one-time token (``ostiary ca token``) is a JWS whose claims are readable without its key:
``aud`` names the CA it is for (``urn:ostiary:ca:<root SHA-256>:sign``) and ``exp`` when it
stops working. Reading them turns the two commonest mistakes into an answer that says what to
do: a token that has expired (tokens live five minutes) is refused before it is sent, and when
the CA refuses a token, the answer names the CA that was asked (its URL, its root's name and
fingerprint) and, if the token was made on another CA, says so, since "unknown provisioner"
from the wrong CA is otherwise a riddle. Nothing here trusts the token: the CA verifies it.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from ostiary.core.errors import Unauthorized

#: Clock difference tolerated between holder and CA (the CA allows the same).
_LEEWAY = timedelta(seconds=30)
_AUDIENCE_PREFIX = "urn:ostiary:ca:"


def describe_ca(ca_url: str, root: x509.Certificate | None) -> str:
    """``the CA at URL (root 'Name', SHA-256 ab12cd34...)``: the CA a refusal came from."""
    if root is None:
        return f"the CA at {ca_url}"
    names = root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = str(names[0].value) if names else root.subject.rfc4514_string()
    return f"the CA at {ca_url} (root {name!r}, SHA-256 {_short(_fingerprint(root))})"


def check_token_not_expired(token: str, *, now: datetime) -> None:
    """Refuse, before it is sent, a token that has expired (unreadable ones: the CA judges)."""
    claims = _claims(token) or {}
    expiry = claims.get("exp")
    if isinstance(expiry, int | float) and not isinstance(expiry, bool):
        expired_at = datetime.fromtimestamp(expiry, UTC)
        if expired_at + _LEEWAY < now:
            raise Unauthorized(
                f"the token expired at {expired_at:%Y-%m-%d %H:%M:%SZ}: make a new one "
                "with 'ostiary ca token' (tokens are valid for 5 minutes unless --ttl says "
                "otherwise) and use it at once"
            )


def explain_refusal(token: str, detail: str, *, ca_url: str, root: x509.Certificate) -> str:
    """What to tell the holder when the CA at ``ca_url`` refused ``token`` with ``detail``.

    It names the CA that was asked; if the token's audience names another CA's root, it says
    so first: the token was made on another CA than the one asked.
    """
    asked = describe_ca(ca_url, root)
    audience = (_claims(token) or {}).get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    theirs = [
        a[len(_AUDIENCE_PREFIX) :].split(":")[0]
        for a in audiences
        if isinstance(a, str) and a.startswith(_AUDIENCE_PREFIX)
    ]
    if theirs and _fingerprint(root) not in theirs:
        return (
            f"this token was made by another CA (root SHA-256 {_short(theirs[0])}), not by "
            f"{asked}, which refused it ({detail}): make the token on this CA, or point "
            "--ca-url and --root (or 'ostiary bootstrap') at the CA that made it"
        )
    return f"{asked} refused the token: {detail}"


def _claims(token: str) -> dict[str, Any] | None:
    parts = token.strip().split(".")
    if len(parts) != 3:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def _fingerprint(root: x509.Certificate) -> str:
    return root.fingerprint(hashes.SHA256()).hex()


def _short(fingerprint: str) -> str:
    return f"{fingerprint[:16]}..."
