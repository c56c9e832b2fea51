"""dns-01 (RFC 8555 section 8.4): a TXT record holds the digest of the key authorization.

The record is ``_acme-challenge.<name>`` (a wildcard's ``*.`` removed, section 8.4 and
section 7.1.3); one of its TXT values, its strings joined, must equal
``base64url(SHA-256(key authorization))``. The lookup goes to the configured resolver, or the
system's (:mod:`ostiary.acme.validation.resolver`), within the settings' timeout. Any miss
is a :class:`ChallengeFailed` with the problem type ``dns`` (no answer, no record) or
``incorrectResponse`` (records, none right), and one line saying which.
"""

from __future__ import annotations

import hmac

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from ostiary.acme.validation.base import (
    ChallengeContext,
    ChallengeFailed,
    ValidationResult,
    ValidationSettings,
)
from ostiary.acme.validation.keyauth import key_authorization_txt
from ostiary.acme.validation.resolver import dns_failure, make_resolver

#: At most this many TXT values are compared (a name answering thousands is not a proof).
MAX_TXT_RECORDS = 64


def challenge_record_name(identifier: str) -> str:
    """``_acme-challenge.`` and the name, without a wildcard's ``*.``."""
    name = identifier.removeprefix("*.").rstrip(".")
    return f"_acme-challenge.{name}"


async def validate_dns01(
    context: ChallengeContext, settings: ValidationSettings
) -> ValidationResult:
    """Look up the TXT record and compare; :class:`ChallengeFailed` on any miss."""
    if context.identifier_type != "dns":
        raise ChallengeFailed(
            "rejectedIdentifier", f"dns-01 proves dns names, not {context.identifier_type!r}"
        )
    record = challenge_record_name(context.identifier_value)
    try:
        name = dns.name.from_text(record)
    except dns.exception.DNSException:
        raise ChallengeFailed("dns", f"{record[:80]!r} is not a DNS name") from None
    resolver = make_resolver(settings)
    try:
        answer = await resolver.resolve(name, dns.rdatatype.TXT)
    except dns.resolver.NXDOMAIN:
        raise ChallengeFailed("dns", f"{record} does not exist (NXDOMAIN)") from None
    except dns.resolver.NoAnswer:
        raise ChallengeFailed("dns", f"{record} has no TXT record") from None
    except dns.exception.DNSException as exc:
        raise dns_failure(record, exc) from None
    expected = key_authorization_txt(context.key_authorization).encode("ascii")
    values = [b"".join(rdata.strings) for rdata in list(answer)[:MAX_TXT_RECORDS]]
    if any(hmac.compare_digest(value, expected) for value in values):
        return ValidationResult()
    raise ChallengeFailed(
        "incorrectResponse",
        f"{record} has {len(values)} TXT value(s), none of them the digest of this "
        "challenge's key authorization",
    )


__all__ = ["MAX_TXT_RECORDS", "challenge_record_name", "validate_dns01"]
