"""The challenge webhook of a ``scep`` provisioner (``--challenge webhook``).

For every request the CA POSTs the CSR's facts as JSON (``provisioner``, ``transaction_id``,
``challenge``, ``subject``, ``san``, ``key_type``, ``key_size``, ``csr``) to an HTTPS URL,
whose TLS certificate is verified against a configured CA file (or the system's roots). The
answer decides, and names the identities the certificate carries:

    {"allow": true, "subject": "CN=alice", "san": ["email:alice@corp.example"]}
    {"allow": false, "reason": "unknown device"}

This is the shape of Intune's third-party challenge validation (docs/mdm.md). An answer
later than the timeout, larger than :data:`MAX_ANSWER`, not JSON, of another shape, or any
status but 200 refuses the request (:class:`Unauthorized`), as a deny does
(:class:`PolicyDenied`); the reason is logged, never the challenge.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from ostiary.core.errors import BadRequest, PolicyDenied, Unauthorized
from ostiary.tls import web_client_context

#: Longest webhook answer read (bytes).
MAX_ANSWER = 64 * 1024
#: Longest deny reason passed on to the device's failInfoText and the log.
MAX_REASON = 200

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """An allow answer: the identities the certificate gets."""

    subject: str
    sans: tuple[str, ...]


def check_webhook_url(url: str | None) -> str:
    """``url`` if it is an absolute https URL; :class:`BadRequest` otherwise."""
    parts = urlsplit(url or "")
    if parts.scheme != "https" or not parts.hostname:
        raise BadRequest("--challenge webhook needs --webhook-url https://HOST/PATH")
    return url or ""


def read_webhook_roots(ca_file: str) -> None:
    """Refuse a CA file that does not load as PEM roots."""
    path = Path(ca_file)
    if not path.is_file():
        raise BadRequest(f"--webhook-ca-file: no such file {ca_file!r}")
    try:
        web_client_context(path)
    except (OSError, ValueError) as exc:
        raise BadRequest(f"--webhook-ca-file {ca_file!r} holds no PEM certificate: {exc}") from None


def ask_webhook(url: str, facts: dict[str, Any], *, ca_file: str | None, timeout: float) -> Verdict:
    """The webhook's verdict on ``facts``; refusals as the module docstring says."""
    try:
        context = web_client_context(Path(ca_file) if ca_file else None)
    except (OSError, ValueError):
        logger.warning("SCEP webhook: its CA file %r does not load", ca_file)
        raise Unauthorized("the challenge webhook cannot be reached") from None
    deadline = time.monotonic() + timeout
    try:
        with (
            httpx.Client(verify=context, timeout=timeout, follow_redirects=False) as client,
            client.stream("POST", url, json=facts) as answer,
        ):
            status = answer.status_code
            body = b""
            for chunk in answer.iter_bytes():
                body += chunk
                if len(body) > MAX_ANSWER:
                    raise _refusal(f"its answer is over {MAX_ANSWER} bytes")
                if time.monotonic() > deadline:  # httpx's timeout is per read, not in all
                    raise _refusal(f"its answer took over {timeout} s")
    except httpx.HTTPError as exc:
        raise _refusal(f"{type(exc).__name__}: {str(exc)[:MAX_REASON]}") from None
    if status != 200:
        raise _refusal(f"it answered HTTP {status}")
    return read_verdict(body)


def read_verdict(body: bytes) -> Verdict:
    """The verdict in a 200 answer's body; refusals as the module docstring says."""
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        raise _refusal("its answer is not JSON") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("allow"), bool):
        raise _refusal("its answer has no boolean 'allow'")
    if not answer["allow"]:
        reason = answer.get("reason")
        text = reason[:MAX_REASON] if isinstance(reason, str) else "no reason given"
        logger.warning("SCEP webhook denied a request: %s", text)
        raise PolicyDenied(f"the challenge webhook denied the request: {text}")
    subject, sans = answer.get("subject"), answer.get("san", [])
    if not isinstance(subject, str) or not subject.strip():
        raise _refusal("an allow answer must name the 'subject'")
    if not isinstance(sans, list) or not all(isinstance(n, str) for n in sans):
        raise _refusal("'san' must be a list of strings")
    return Verdict(subject, tuple(sans))


def _refusal(why: str) -> Unauthorized:
    logger.warning("SCEP webhook: no verdict, the request is refused: %s", why)
    return Unauthorized(f"the challenge webhook gave no verdict ({why})")


__all__ = [
    "MAX_ANSWER",
    "Verdict",
    "ask_webhook",
    "check_webhook_url",
    "read_verdict",
    "read_webhook_roots",
]
