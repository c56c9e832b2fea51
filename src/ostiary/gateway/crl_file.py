"""A CRL file kept fresh for relying parties that read CRLs from disk (nginx ``ssl_crl``,
Mosquitto ``crlfile``), and the command to run after each change.

The file is PEM: the CRL of every live intermediate (the issuing one, and after a rotation
the retiring ones whose leaves are still out: :mod:`ostiary.authority.rollover`), then (with
``include_root``) the root's CRL, since nginx checks every level of the chain and refuses a
client whose intermediate has no CRL. With ``--bundle-out``, the trust bundle (roots and
live intermediates) is kept fresh next to it, so that a rotation reaches nginx and Mosquitto
without editing their configuration.
It is replaced atomically (write to a temporary file, rename) and only when its content
changes, so the reload command runs exactly after each new CRL.

Sources: a running CA server (``--ca-url``: ``/crl`` and ``/root.crl`` over plain HTTP) or a
CA folder on this machine (the issuing CRL built by the same publisher as the server's,
rebuilt only when a revocation is recorded or half its life has passed; the root CRL read
from ``certs/root.crl``).

When to look again. From a CA server, :class:`FeedWaiter` follows its revocation feed
(``/revocations``, a long poll): the CRL is fetched again as soon as the feed announces a
revocation, and in any case every ``--interval``. The feed only says *when*; what is written
is still the CRL, checked as always. Its answers are verified against the issuing CA when
``--ca-root`` names it (a forged one is ignored: the timer still runs).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ostiary.authority.authority import Authority
from ostiary.authority.folder import CRL_PATH, ROOT_CRL_PATH
from ostiary.authority.publisher import CrlPublisher
from ostiary.authority.rollover import live_issuers
from ostiary.client.root_trust import adopt_roots
from ostiary.core.ca import issued_by, key_id_hex
from ostiary.core.errors import BadRequest, InvalidCertificate, Unavailable
from ostiary.gateway.feed import HOLD_SECONDS, FeedRefused, key_id_of, verify_feed_answer

log = logging.getLogger("ostiary.crl_watch")

#: Returns the DER CRLs to write, issuing CA first.
CrlSource = Callable[[], list[bytes]]
#: Where a CA server lists its live intermediates (PEM).
LIVE_PATH = "/intermediates.pem"
ROOTS_PATH = "/roots"


def trust_bundle(
    roots: Sequence[x509.Certificate], intermediates: Sequence[x509.Certificate]
) -> bytes:
    """The PEM trust bundle for nginx/Mosquitto (``ssl_client_certificate``, ``cafile``):
    the roots, then every live intermediate, each checked to be signed by one of them (a
    list fetched over plain HTTP is no trust anchor).
    """
    for intermediate in intermediates:
        if not issued_by(intermediate, roots):
            raise InvalidCertificate(
                f"{intermediate.subject.rfc4514_string()} is not signed by a trusted root"
            )
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (*roots, *intermediates))


def remote_source(
    base_url: str,
    *,
    include_root: bool,
    timeout: float = 10.0,
    intermediates: list[x509.Certificate] | None = None,
    trusted_roots: Sequence[x509.Certificate] = (),
    next_roots: list[x509.Certificate] | None = None,
) -> CrlSource:
    """CRLs fetched from a CA server's plain-HTTP publishing endpoints: one per live
    intermediate (``/intermediates.pem``, then ``/crl/KEYID``; a server without rollover:
    ``/crl``). The intermediates found are put in ``intermediates`` when given.

    With ``next_roots``, the roots of ``/roots`` that a cross-certificate from one of
    ``trusted_roots`` vouches for (after ``ca root rotate``) are put there, and with
    ``include_root`` their CRLs (``/crl/KEYID``) are fetched too.
    """
    base = base_url.rstrip("/")

    def get(client: httpx.Client, path: str) -> httpx.Response:
        try:
            answer = client.get(base + path)
        except httpx.HTTPError as exc:
            raise Unavailable(f"{base + path}: {type(exc).__name__}") from None
        if answer.status_code != 200 and path != LIVE_PATH:
            raise Unavailable(f"{base + path}: HTTP {answer.status_code}")
        return answer

    def fetch() -> list[bytes]:
        with httpx.Client(timeout=timeout) as client:
            listed = get(client, LIVE_PATH)
            live = _certificates(listed.content) if listed.status_code == 200 else []
            if intermediates is not None:
                intermediates[:] = live
            paths = [f"{CRL_PATH}/{key_id_hex(c)}" for c in live] or [CRL_PATH]
            if include_root:
                paths.append(ROOT_CRL_PATH)
            if next_roots is not None:
                next_roots[:] = _next_roots(client.get(base + ROOTS_PATH), trusted_roots)
                if include_root:
                    paths.extend(f"{CRL_PATH}/{key_id_hex(c)}" for c in next_roots)
            return [get(client, path).content for path in paths]

    return fetch


def _next_roots(
    answer: httpx.Response, trusted: Sequence[x509.Certificate]
) -> list[x509.Certificate]:
    """The roots of a ``/roots`` answer adopted through a cross-certificate (none from a
    server without that list).
    """
    try:
        body = answer.json() if answer.status_code == 200 else {}
        offered = [x509.load_pem_x509_certificate(p.encode()) for p in body.get("roots", [])]
        cross = [
            x509.load_pem_x509_certificate(p.encode()) for p in body.get("cross_certificates", [])
        ]
    except (ValueError, AttributeError, TypeError):
        raise InvalidCertificate(f"{ROOTS_PATH} is not a list of roots") from None
    return list(adopt_roots(trusted, offered, cross, now=datetime.now(UTC)).adopted)


def _certificates(pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem) if pem.strip() else []
    except ValueError:
        raise InvalidCertificate(f"{LIVE_PATH} is not a list of certificates") from None


def folder_source(
    authority: Authority,
    *,
    include_root: bool,
    intermediates: list[x509.Certificate] | None = None,
) -> CrlSource:
    """CRLs from a CA folder whose key is unlocked: one per live intermediate."""
    publishers: dict[str, CrlPublisher] = {}

    def build() -> list[bytes]:
        live = live_issuers(authority)
        if intermediates is not None:
            intermediates[:] = [i.certificate for i in live]
        found = []
        for issuer in live:
            key_id = key_id_hex(issuer.certificate)
            if key_id not in publishers:
                publishers[key_id] = CrlPublisher(authority, issuer=issuer)
            found.append(publishers[key_id].current().der)
        if include_root:
            try:
                found.append(authority.ca.paths.root_crl.read_bytes())
            except FileNotFoundError:
                raise BadRequest(
                    f"no root CRL at {authority.ca.paths.root_crl}: run 'ostiary ca serve' once "
                    "(it makes it) or leave out --root"
                ) from None
        return found

    return build


def crl_pem(ders: Sequence[bytes], trusted: Sequence[x509.Certificate], *, now: datetime) -> bytes:
    """The CRLs as one PEM file; each must verify against ``trusted`` (if given) and be current."""
    out = []
    for der in ders:
        try:
            crl = (
                x509.load_pem_x509_crl(der)
                if der.lstrip().startswith(b"-----BEGIN")
                else x509.load_der_x509_crl(der)
            )
        except ValueError:
            raise InvalidCertificate("the CA handed out something that is not a CRL") from None
        if trusted:
            issuers = [c for c in trusted if c.subject == crl.issuer]
            if not any(_signed_by(crl, c) for c in issuers):
                raise InvalidCertificate(
                    f"the CRL of {crl.issuer.rfc4514_string()} is not signed by a trusted CA"
                )
        next_update = crl.next_update_utc
        if next_update is not None and next_update < now:
            raise InvalidCertificate(f"the CRL of {crl.issuer.rfc4514_string()} is out of date")
        out.append(crl.public_bytes(serialization.Encoding.PEM))
    return b"".join(out)


def _signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def write_if_changed(path: Path, data: bytes) -> bool:
    """Replace ``path`` atomically with ``data`` (mode 0644); False if it already held it."""
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    descriptor, temporary = tempfile.mkstemp(prefix=".crl-", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return True


def run_reload(command: str) -> int:
    """Run the reload command through ``sh -c``; its exit status."""
    return subprocess.run(["/bin/sh", "-c", command], check=False).returncode


class FeedWaiter:
    """Waits for the next revocation announced by a CA server's feed (or a deadline)."""

    def __init__(
        self,
        base_url: str,
        trusted: Sequence[x509.Certificate],
        *,
        hold_seconds: float = HOLD_SECONDS,
        timeout: float = 10.0,
    ) -> None:
        self.url = base_url.rstrip("/") + "/revocations"
        self._issuers = {key_id_of(c): c for c in trusted}
        self._hold = hold_seconds
        self._http = httpx.Client(timeout=httpx.Timeout(timeout, read=hold_seconds + timeout))
        #: The feed position reached, and whether the feed has answered once.
        self.after = 0
        self._following = False

    def close(self) -> None:
        self._http.close()

    def wait(self, seconds: float) -> bool:
        """True as soon as the feed announces revocations (or a new snapshot), False when
        ``seconds`` pass first. Errors of the feed only mean waiting for the deadline.
        """
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                if self._ask(min(left, self._hold)):
                    return True
            except (httpx.HTTPError, FeedRefused) as exc:
                shown = str(exc) if isinstance(exc, FeedRefused) else type(exc).__name__
                log.warning("revocation feed %s: %s", self.url, shown)
                time.sleep(max(0.0, min(1.0, deadline - time.monotonic())))
        return False

    def _ask(self, hold: float) -> bool:
        nonce = secrets.token_urlsafe(16)
        after = self.after
        answer = self._http.get(
            self.url,
            params={
                "after": str(after),
                "nonce": nonce,
                "wait": f"{hold:.3f}" if self._following else "0",
            },
        )
        if answer.status_code != 200:
            raise FeedRefused(f"HTTP {answer.status_code}")
        token = answer.content
        issuer = self._issuer_of(token)
        if issuer is not None:
            verified = verify_feed_answer(token, issuer, after=after, nonce=nonce)
            head, news = verified.head, bool(verified.serials or verified.snapshot)
        else:  # nothing to verify with: a hint to fetch the CRL (checked itself), no more
            head, news = _unverified_head(token)
        self.after = head
        self._following = True
        return news

    def _issuer_of(self, token: bytes) -> x509.Certificate | None:
        if not self._issuers:
            return None
        try:
            header = json.loads(_b64(token.split(b".", 1)[0]))
        except ValueError:
            raise FeedRefused("the answer is not a JWS") from None
        kid = header.get("kid") if isinstance(header, dict) else None
        issuer = self._issuers.get(kid) if isinstance(kid, str) else None
        if issuer is None:
            raise FeedRefused("the answer is signed by a CA not given in --ca-root")
        return issuer


def _b64(part: bytes) -> bytes:
    return base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4))


def _unverified_head(token: bytes) -> tuple[int, bool]:
    try:
        payload = json.loads(_b64(token.split(b".")[1]))
        head = payload["head"]
        news = bool(payload.get("revoked") or payload.get("snapshot"))
    except (ValueError, IndexError, KeyError, TypeError):
        raise FeedRefused("the answer is not a feed answer") from None
    if not isinstance(head, int):
        raise FeedRefused("the answer is not a feed answer")
    return head, news
