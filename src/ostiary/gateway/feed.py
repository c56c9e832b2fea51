"""Following the CA's revocation feed: revoked serials pushed to us, not polled per client.

The CA publishes its revocations as a signed, ordered, resumable stream
(:mod:`ostiary.authority.revocation_feed`, ``GET /revocations``). A :class:`FeedFollower`
keeps one long poll open to it per issuing CA and holds that CA's revoked serials as the
keys of a dict: a lookup per handshake is one hash probe (O(1)); the gateway's resident size
grows by about 250 bytes per revoked serial (the ``int``, its slot, and what parsing the
snapshot CRL left in the allocator; ``docs/BENCHMARKS.md``).

Every answer is a compact JWS verified against the issuing CA we pinned (``ca_roots``), with
the algorithm the CA's key type calls for and nothing else; it must name that CA (``iss``),
answer our position (``after``) and echo the random ``nonce`` we sent, so an answer cannot
be forged, replayed or taken from another subscriber. An answer that fails any of this is
dropped and counts as an outage.

A snapshot (a new subscriber, a position outside the CA's window) is the CA's CRL, checked
like the feed (signature of the pinned issuer, not past its nextUpdate); its serials are
added to the set and the follower continues from the head the snapshot answer named.

What a lookup says (:meth:`FeedFollower.verdict`):

- the serial is in the set: revoked, whatever else is true (a revocation is permanent);
- the follower is *current* (its last answer came in less than the long poll's hold plus a
  margin ago and no request failed since): not revoked;
- otherwise (starting, a gap being filled, the CA unreachable): ``None``, and the gateway
  asks OCSP/CRL as before (:mod:`ostiary.gateway.revocation`). If that cannot answer
  either, the set is still trusted for ``grace_seconds`` after the last good answer
  (:meth:`FeedFollower.within_grace`); past that, the connection is refused (fail closed).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from ostiary.gateway.memo import ByObject

log = logging.getLogger("ostiary.gateway.feed")

#: How long the CA may hold one request (seconds).
HOLD_SECONDS = 20.0
#: An answer may come this much later than the hold before the follower counts as stale.
MARGIN_SECONDS = 5.0
#: Waits after a failed request: doubling from the first to the last (seconds).
RETRY_SECONDS = (0.2, 5.0)
#: The JWS algorithm of each key type, the only one accepted for it.
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_SKEW = timedelta(minutes=5)
_SHA256 = hashes.SHA256()


class FeedRefused(Exception):
    """An answer (or snapshot) that is not from our CA, not for our request, or unreadable."""


@dataclass(frozen=True, slots=True)
class FeedAnswer:
    """A verified answer: the serials it lists, where to continue, whether to start over."""

    head: int
    serials: tuple[int, ...]
    snapshot: str | None


def key_id_of(certificate: x509.Certificate) -> str:
    """Hex of the CA certificate's subject key identifier (what the feed's ``kid`` names)."""
    try:
        ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        return ski.value.digest.hex()
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(certificate.public_key()).digest.hex()


def verify_feed_answer(
    token: bytes, issuer: x509.Certificate, *, after: int, nonce: str
) -> FeedAnswer:
    """Check an answer of the feed against the pinned ``issuer``; :class:`FeedRefused` if not."""
    public_key = issuer.public_key()
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key: ECKey | RSAKey
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        algorithm = _EC_ALGORITHMS.get(public_key.curve.name)
        if algorithm is None:
            raise FeedRefused(f"no JWS algorithm for the curve {public_key.curve.name}")
        key = ECKey.import_key(pem)
    elif isinstance(public_key, rsa.RSAPublicKey):
        algorithm = "PS256"
        key = RSAKey.import_key(pem)
    else:
        raise FeedRefused("the issuing CA's key type cannot sign the feed")
    try:
        signed = jws.deserialize_compact(token.strip(), key, algorithms=[algorithm])
    except (JoseError, ValueError) as exc:
        raise FeedRefused(f"the answer is not signed by the issuing CA ({exc})") from None
    kid = key_id_of(issuer)
    if signed.headers().get("kid") != kid:
        raise FeedRefused("the answer names another CA key")
    try:
        payload = json.loads(signed.payload)
        head = payload["head"]
        listed = payload["revoked"]
        snapshot = payload.get("snapshot")
        if not isinstance(head, int) or not isinstance(listed, list):
            raise TypeError
        serials = tuple(int(item["serial"], 16) for item in listed)
    except (ValueError, KeyError, TypeError):
        raise FeedRefused("the answer's payload is not a feed answer") from None
    if payload.get("iss") != kid:
        raise FeedRefused("the answer is about another CA")
    if payload.get("nonce") != nonce or payload.get("after") != after:
        raise FeedRefused("the answer is not the answer to our request (replayed?)")
    if snapshot is not None and not (isinstance(snapshot, str) and snapshot.startswith("/")):
        raise FeedRefused("the answer's snapshot is not a path")
    return FeedAnswer(head, serials, snapshot)


def revoked_serials_of_crl(
    data: bytes, issuer: x509.Certificate, *, now: datetime
) -> frozenset[int]:
    """The serials a CRL lists, if ``issuer`` signed it and it is current."""
    try:
        crl = (
            x509.load_pem_x509_crl(data)
            if data.lstrip().startswith(b"-----BEGIN")
            else x509.load_der_x509_crl(data)
        )
    except ValueError:
        raise FeedRefused("the snapshot is not a CRL") from None
    try:
        signed = crl.issuer == issuer.subject and crl.is_signature_valid(
            issuer.public_key()  # type: ignore[arg-type]
        )
    except (TypeError, ValueError):
        signed = False
    if not signed:
        raise FeedRefused("the snapshot CRL is not signed by the issuing CA")
    next_update = crl.next_update_utc
    if next_update is None or next_update < now - _SKEW:
        raise FeedRefused("the snapshot CRL is out of date")
    return frozenset(entry.serial_number for entry in crl)


def feed_url_for(certificate: x509.Certificate) -> str | None:
    """The feed of the CA that issued ``certificate``: beside its CRL (``.../crl`` ->
    ``.../revocations``), which is where an Ostiary CA publishes both. None if it names no
    such CRL.
    """
    try:
        points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    except x509.ExtensionNotFound:
        return None
    for point in points.value:
        for name in point.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier):
                parts = urlsplit(name.value)
                if parts.scheme in ("http", "https") and parts.path.endswith("/crl"):
                    path = parts.path[: -len("crl")] + "revocations"
                    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    return None


class FeedFollower:
    """One issuing CA's revoked serials, kept current by a long poll of its feed."""

    def __init__(
        self,
        url: str,
        issuer: x509.Certificate,
        *,
        grace_seconds: float,
        timeout_seconds: float,
        hold_seconds: float = HOLD_SECONDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.url = url
        self.issuer = issuer
        self.grace_seconds = grace_seconds
        self.hold_seconds = hold_seconds
        self.clock = clock
        #: The revoked serials, as a dict's keys (values None) rather than a set: a dict of
        #: ints is never tracked by the garbage collector, a set always is, and each full
        #: collection would walk all of it (at 100,000 serials, ~2 % of the gateway's
        #: instructions per full handshake).
        self.revoked: dict[int, None] = {}
        #: The position to ask from (0: start with a snapshot).
        self.after = 0
        #: ``time.monotonic()`` of the last good answer, and whether the last request failed.
        self.confirmed_at: float | None = None
        self.failing = False
        self.answers = 0
        self._timeout = timeout_seconds
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_seconds, read=hold_seconds + MARGIN_SECONDS),
            follow_redirects=False,
        )
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lookups

    def current(self) -> bool:
        """Is the set known to hold every revocation up to about now?"""
        confirmed = self.confirmed_at
        return (
            confirmed is not None
            and not self.failing
            and time.monotonic() - confirmed < self.hold_seconds + MARGIN_SECONDS
        )

    def within_grace(self) -> bool:
        """Is the last good answer recent enough to trust the set while the CA is away?"""
        confirmed = self.confirmed_at
        return confirmed is not None and time.monotonic() - confirmed <= self.grace_seconds

    def verdict(self, serial_number: int) -> bool | None:
        """True if revoked, False if the set is current and does not list it, else None."""
        if serial_number in self.revoked:
            return True
        return False if self.current() else None

    # ------------------------------------------------------------------ following

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._follow())

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self._http.aclose()

    async def _follow(self) -> None:
        wait = RETRY_SECONDS[0]
        while True:
            try:
                await self.poll_once(hold=self.hold_seconds if self.answers else 0)
            except (httpx.HTTPError, FeedRefused) as exc:
                self.failing = True
                log.warning("revocation feed %s: %s", self.url, _describe(exc))
                await asyncio.sleep(wait)
                wait = min(wait * 2, RETRY_SECONDS[1])
            else:
                wait = RETRY_SECONDS[0]

    async def poll_once(self, *, hold: float) -> None:
        """One request (and a snapshot if the answer asks for one)."""
        nonce = secrets.token_urlsafe(16)
        after = self.after
        answer = await self._http.get(
            self.url, params={"after": str(after), "nonce": nonce, "wait": f"{hold:g}"}
        )
        if answer.status_code != 200:
            raise FeedRefused(f"HTTP {answer.status_code}")
        verified = verify_feed_answer(answer.content, self.issuer, after=after, nonce=nonce)
        if verified.snapshot is not None:
            parts = urlsplit(self.url)
            crl_url = urlunsplit((parts.scheme, parts.netloc, verified.snapshot, "", ""))
            crl = await self._http.get(crl_url, timeout=self._timeout)
            if crl.status_code != 200:
                raise FeedRefused(f"snapshot {crl_url}: HTTP {crl.status_code}")
            serials = await asyncio.to_thread(
                revoked_serials_of_crl, crl.content, self.issuer, now=self.clock()
            )
            self.revoked.update(dict.fromkeys(serials))
        self.revoked.update(dict.fromkeys(verified.serials))
        self.after = verified.head
        self.confirmed_at = time.monotonic()
        self.failing = False
        self.answers += 1


def _describe(exc: Exception) -> str:
    if isinstance(exc, FeedRefused):
        return str(exc)
    return type(exc).__name__


class FeedFollowers:
    """The gateway's followers, one per issuing CA, started at the first client it issued."""

    def __init__(
        self,
        setting: str,
        *,
        grace_seconds: float,
        timeout_seconds: float,
        hold_seconds: float = HOLD_SECONDS,
    ) -> None:
        self.setting = setting
        self._grace = grace_seconds
        self._timeout = timeout_seconds
        self._hold = hold_seconds
        self.followers: dict[bytes, FeedFollower] = {}
        self._by_issuer: ByObject[x509.Certificate, FeedFollower] = ByObject()

    def follower_for(self, leaf: x509.Certificate, issuer: x509.Certificate) -> FeedFollower | None:
        """The follower of ``issuer`` (started now if new); None when the feed is off or the
        certificate names no feed.
        """
        if self.setting == "off":
            return None
        known = self._by_issuer.get(issuer)
        if known is not None:
            return known
        key = issuer.fingerprint(_SHA256)
        follower = self.followers.get(key)
        if follower is None:
            url = feed_url_for(leaf) if self.setting == "auto" else self.setting
            if url is None:
                return None
            follower = self.followers[key] = FeedFollower(
                url,
                issuer,
                grace_seconds=self._grace,
                timeout_seconds=self._timeout,
                hold_seconds=self._hold,
            )
            follower.start()
        return self._by_issuer.put(issuer, follower)

    async def aclose(self) -> None:
        for follower in list(self.followers.values()):
            await follower.aclose()
        self.followers.clear()
        self._by_issuer = ByObject()


__all__ = [
    "FeedAnswer",
    "FeedFollower",
    "FeedFollowers",
    "FeedRefused",
    "feed_url_for",
    "key_id_of",
    "revoked_serials_of_crl",
    "verify_feed_answer",
]
