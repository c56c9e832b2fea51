"""The contract between the ACME order state machine and the challenge validators."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ValidationSettings:
    """Where and how validation reaches out; ports and resolver are settable for tests.

    ``dns_resolver`` is ``(host, port)`` or ``None`` for the system resolver.
    ``answer_wait`` is how long a challenge POST waits for the validation it started
    before it answers ``processing`` with ``Retry-After`` (0: at once); a validation that
    ends sooner is answered ``valid`` or ``invalid`` (``ca serve --acme-challenge-wait``).
    """

    http_port: int = 80
    tls_port: int = 443
    dns_resolver: tuple[str, int] | None = None
    timeout: float = 10.0
    max_body_bytes: int = 8192
    max_redirects: int = 10
    answer_wait: float = 1.0


@dataclass(frozen=True)
class ChallengeContext:
    """One challenge being validated.

    ``identifier_type`` is the ACME identifier type (``dns``, ``ip``,
    ``permanent-identifier``, ``hardware-module``) and ``identifier_value`` its value as
    ordered (a wildcard keeps its ``*.``). ``key_authorization`` is
    ``token + "." + b64url(JWK thumbprint)`` (RFC 8555 section 8.1). ``payload`` is the JSON
    object the client POSTed to the challenge URL (device-attest-01 carries ``attObj`` there).
    ``policy`` holds what the provisioner configured for this challenge type (attestation
    roots, formats), keyed by name; validators read only what they need.
    """

    challenge_type: str
    identifier_type: str
    identifier_value: str
    token: str
    key_authorization: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    policy: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ValidationResult:
    """What a successful validation proved beyond control of the identifier.

    ``attested_spki_der`` is the SubjectPublicKeyInfo of a key a device attested; finalize
    must then see exactly that key in the CSR. ``hardware_key`` says the key is bound to
    hardware, so the certificate carries the hardware policy OID.
    """

    attested_spki_der: bytes | None = None
    hardware_key: bool = False


class ChallengeFailed(Exception):
    """The proof was wrong or could not be fetched.

    ``problem`` is the RFC 8555 error type without its URN prefix (``connection``,
    ``incorrectResponse``, ``dns``, ``tls``, ``unauthorized``, ``badAttestationStatement``);
    ``detail`` is one line a person can act on, never holding a secret.
    """

    def __init__(self, problem: str, detail: str) -> None:
        super().__init__(detail)
        self.problem = problem
        self.detail = detail


Validator = Callable[[ChallengeContext, ValidationSettings], Awaitable[ValidationResult]]
