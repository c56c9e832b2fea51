"""Challenge validation: each challenge type proves control of one identifier.

A validator is an async callable ``(ChallengeContext, ValidationSettings) -> ValidationResult``
that raises :class:`ChallengeFailed` with an RFC 8555 problem type when the proof is wrong or
cannot be fetched. Validators never touch the store; the order state machine records the
outcome.

:data:`VALIDATORS` maps each challenge type to its validator; a new one plugs in with one
line below. The order state machine offers a challenge type only when it is both enabled by
the provisioner and registered here.
"""

from collections.abc import Mapping

from ostiary.acme.validation.base import (
    ChallengeContext,
    ChallengeFailed,
    ValidationResult,
    ValidationSettings,
    Validator,
)
from ostiary.acme.validation.device_attest import validate_device_attest01
from ostiary.acme.validation.dns01 import validate_dns01
from ostiary.acme.validation.http01 import validate_http01
from ostiary.acme.validation.tls_alpn01 import validate_tls_alpn01

#: Challenge type -> validator.
VALIDATORS: Mapping[str, Validator] = {
    "http-01": validate_http01,
    "dns-01": validate_dns01,
    "tls-alpn-01": validate_tls_alpn01,
    "device-attest-01": validate_device_attest01,
}

__all__ = [
    "VALIDATORS",
    "ChallengeContext",
    "ChallengeFailed",
    "ValidationResult",
    "ValidationSettings",
    "Validator",
]
