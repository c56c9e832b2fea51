"""Challenge validation: each challenge type proves control of one identifier.

A validator is an async callable ``(ChallengeContext, ValidationSettings) -> ValidationResult``
that raises :class:`ChallengeFailed` with an RFC 8555 problem type when the proof is wrong or
cannot be fetched. Validators never touch the store; the order state machine records the
outcome.
"""

from ostiary.acme.validation.base import (
    ChallengeContext,
    ChallengeFailed,
    ValidationResult,
    ValidationSettings,
    Validator,
)

__all__ = [
    "ChallengeContext",
    "ChallengeFailed",
    "ValidationResult",
    "ValidationSettings",
    "Validator",
]
