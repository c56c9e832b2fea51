"""Per-address limits for what anyone may ask without a credential.

A few routes answer anonymous callers and keep something for them: an attestation nonce
(``POST /attestation/nonce``), a console sign-in flow (``GET /console/oidc/sign-in``), a
request for an officer (``POST /requests``), a new ACME account (``newAccount``). Each has
an :class:`AddressLimiter`: a token bucket per client address (``burst`` requests at once,
then one every ``interval``); a caller past it gets 429 ``too-many-requests`` (ACME:
``rateLimited``) with ``Retry-After``, and nothing is stored.

The client address is the TCP peer of the connection (:func:`client_address`), never
``X-Forwarded-For``: uvicorn rewrites the ASGI ``client`` from that header for peers it
trusts (``forwarded_allow_ips``, loopback by default), and a header is the caller's to
choose. Behind a TLS-terminating proxy every caller is the proxy's address, so the limits
then apply to all callers together; limit at the proxy too in that setup.

The state is per process, in memory: with ``--workers N`` or several replicas, each has its
own buckets (so a caller gets up to N times the burst). It is bounded: at most
``max_addresses`` buckets are kept, and the least recently used one is forgotten first
(a forgotten address starts with a full bucket again).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from fastapi import Request

from ostiary.core.errors import OstiaryError, TooManyRequests
from ostiary.server.tls_scope import peer_address

T = TypeVar("T")


@dataclass
class _Bucket:
    tokens: float
    updated: float


class AddressLimiter:
    """A token bucket per client address, for one kind of request (thread-safe)."""

    def __init__(
        self,
        what: str,
        *,
        burst: int,
        interval: float,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        if burst < 1 or interval <= 0 or max_addresses < 1:
            raise ValueError("a limiter needs burst >= 1, interval > 0 and max_addresses >= 1")
        self.what = what
        self.burst = burst
        self.interval = interval
        self.max_addresses = max_addresses
        self._clock = clock
        #: Told :attr:`label` of each refusal (``/metrics``).
        self.on_refused = on_refused
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, address: str | None) -> None:
        """Take one request from ``address``'s bucket; :class:`TooManyRequests` if empty.

        A request with no address at all (an app called in-process) shares one bucket.
        """
        self._take(address, refuse=True, spend=True)

    def admit(self, address: str | None) -> None:
        """:class:`TooManyRequests` if ``address``'s bucket is empty; nothing is taken.

        With :meth:`count`, for limits on failures only: a caller is admitted while it has
        failures left, and only a failure (:meth:`count`) takes from its bucket.
        """
        self._take(address, refuse=True, spend=False)

    def count(self, address: str | None) -> None:
        """Take one from ``address``'s bucket (a failure), never refusing."""
        self._take(address, refuse=False, spend=True)

    def guard(self, address: str | None, verify: Callable[[], T]) -> T:
        """``verify()`` of a credential under a limit on refusals: ``address`` past it is
        refused (:class:`TooManyRequests`) before ``verify`` runs; only a refusal of the
        credential (an :class:`OstiaryError` from it) counts.
        """
        self.admit(address)
        try:
            return verify()
        except OstiaryError:
            self.count(address)
            raise

    def _take(self, address: str | None, *, refuse: bool, spend: bool) -> None:
        key = address or "-"
        now = self._clock()
        with self._lock:
            bucket = self._buckets.pop(key, None)
            if bucket is None:
                bucket = _Bucket(float(self.burst), now)
            else:
                refill = (now - bucket.updated) / self.interval
                bucket.tokens = min(float(self.burst), bucket.tokens + refill)
                bucket.updated = now
            self._buckets[key] = bucket  # most recently used last
            while len(self._buckets) > self.max_addresses:
                self._buckets.popitem(last=False)
            if bucket.tokens >= 1 or not refuse:
                if spend:
                    bucket.tokens = max(0.0, bucket.tokens - 1)
                return
            wait = max(1, math.ceil((1 - bucket.tokens) * self.interval))
        if self.on_refused is not None:
            self.on_refused(self.label)
        raise TooManyRequests.wait(
            f"too many {self.what} {self._whose(key)}: try again in {wait} s", wait
        )

    @property
    def label(self) -> str:
        """The ``limit`` label of its refusals in ``/metrics``."""
        return self.what

    def _whose(self, key: str) -> str:
        return "from this address"

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)


class ProvisionerLimiter(AddressLimiter):
    """A token bucket per provisioner, for one kind of request: what all addresses together
    may ask of one provisioner (many addresses, or one IPv6 prefix, each within its own
    per-address limit, could otherwise keep one provisioner's rows growing).

    Check it only with the name of a provisioner that was found: a requester chooses the
    name, and a bucket is kept for every name checked (at most ``max_addresses``).
    """

    @property
    def label(self) -> str:
        return f"{self.what} per provisioner"

    def _whose(self, key: str) -> str:
        return f"for provisioner {key!r} from all addresses"


def client_address(request: Request) -> str | None:
    """The TCP peer address of the request's connection (see the module docstring)."""
    return peer_address(request.scope)


@dataclass(frozen=True)
class Limits:
    """The per-process limiters of one app (kept in ``app.state``)."""

    nonces: AddressLimiter
    sign_ins: AddressLimiter
    requests: AddressLimiter
    acme_accounts: AddressLimiter
    failed_tokens: AddressLimiter
    acme_nonces: AddressLimiter
    scep_operations: AddressLimiter
    ocsp: AddressLimiter
    acme_accounts_per_provisioner: ProvisionerLimiter
    acme_orders_per_provisioner: ProvisionerLimiter
    scep_operations_per_provisioner: ProvisionerLimiter
    est_enrollments_per_provisioner: ProvisionerLimiter
    sign_ins_per_provisioner: ProvisionerLimiter

    @classmethod
    def default(cls, *, on_refused: Callable[[str], None] | None = None) -> Limits:
        """The limits of the server; ``on_refused`` is told of each refusal (``/metrics``)."""
        return cls(
            # A TPM enrollment or renewal asks for one nonce; a fleet renewing behind one NAT
            # several. An address holds at most ~160 of the 5-minute nonces; all addresses
            # together at most MAX_UNSPENT_NONCES.
            nonces=AddressLimiter(
                "attestation nonces", burst=60, interval=3.0, on_refused=on_refused
            ),
            # People signing in to the console; an address holds at most ~90 flows of
            # 10 minutes.
            sign_ins=AddressLimiter(
                "console sign-ins", burst=30, interval=10.0, on_refused=on_refused
            ),
            # Devices submitting CSRs for approval (a batch of devices set up behind one
            # address at once): ~330 a day from one address, which the day an unopened
            # request waits (provisioners/approval_queue.py) keeps below MAX_PENDING.
            requests=AddressLimiter(
                "certificate requests", burst=40, interval=300.0, on_refused=on_refused
            ),
            # New ACME accounts (each is a row kept until it is deactivated): a fleet set up
            # behind one address makes 100 at once, then 100 an hour.
            acme_accounts=AddressLimiter(
                "new ACME accounts", burst=100, interval=36.0, on_refused=on_refused
            ),
            # Refused credentials: tokens on the enrollment routes (POST /sign, /renew,
            # /revoke) and POST /ssh/certificate (SSH tokens, OIDC ID tokens), EST one-time
            # codes (HTTP Basic); one bucket. Only a refusal counts, never a success. A
            # refusal costs a signature check or a lookup (a token or a code cannot be
            # guessed), so this stops floods, not guessing: 300 at once (a fleet behind one
            # address with a stale token; tests/server/test_api_fuzz.py's run), then 5 a
            # second.
            failed_tokens=AddressLimiter(
                "refused tokens", burst=300, interval=0.2, on_refused=on_refused
            ),
            # ACME nonces (kept rows, 1 per request of a client): every ACME request of a
            # client may carry one; certbot asks for one per order at most.
            acme_nonces=AddressLimiter(
                "ACME nonces", burst=300, interval=0.5, on_refused=on_refused
            ),
            # SCEP PKIOperation (each one a CMS decryption and a signature): a fleet behind one
            # address enrolls at once (bench/scep_enroll.py sends ~280), then 10 a second.
            scep_operations=AddressLimiter(
                "SCEP operations", burst=1000, interval=0.1, on_refused=on_refused
            ),
            # OCSP on the plain-HTTP listener, the requests no kept answer serves (each a
            # lookup and a signature; a cached answer is never limited): generous, relying
            # parties poll and many sit behind one address; this only stops a flood.
            ocsp=AddressLimiter("OCSP requests", burst=2000, interval=0.01, on_refused=on_refused),
            # New ACME accounts of one ACME provisioner, from all addresses together (rows
            # kept until deactivated): 1,000 at once (a fleet set up through one provisioner),
            # then 1,000 an hour; past it new accounts wait, existing ones go on ordering.
            acme_accounts_per_provisioner=ProvisionerLimiter(
                "new ACME accounts", burst=1000, interval=3.6, on_refused=on_refused
            ),
            # New ACME orders of one ACME provisioner (rows with their authorizations and
            # challenges): 2,000 at once (a fleet renewing together), then 5 a second.
            acme_orders_per_provisioner=ProvisionerLimiter(
                "new ACME orders", burst=2000, interval=0.2, on_refused=on_refused
            ),
            # SCEP PKIOperation of one provisioner (each a CMS decryption and a signature),
            # both listeners, from all addresses together: five fleets' worth of the
            # per-address burst, then 50 a second.
            scep_operations_per_provisioner=ProvisionerLimiter(
                "SCEP operations", burst=5000, interval=0.02, on_refused=on_refused
            ),
            # EST simpleenroll/simplereenroll of one provisioner with a credential (each a
            # code lookup or a chain check, and a signature), from all addresses together:
            # as for SCEP.
            est_enrollments_per_provisioner=ProvisionerLimiter(
                "EST enrollments", burst=5000, interval=0.02, on_refused=on_refused
            ),
            # Sign-ins started through one OIDC provisioner (console and /enroll), from all
            # addresses together: each a flow kept 10 minutes (at most MAX_FLOWS in all) and
            # a redirect to the provider; 500 at once (a company at nine), then 1 a second.
            sign_ins_per_provisioner=ProvisionerLimiter(
                "console sign-ins", burst=500, interval=1.0, on_refused=on_refused
            ),
        )


def limits_of(request: Request) -> Limits:
    """The limiters of the app serving ``request`` (made by ``create_app``)."""
    limits: Limits = request.app.state.ostiary_limits
    return limits


__all__ = [
    "AddressLimiter",
    "Limits",
    "ProvisionerLimiter",
    "client_address",
    "limits_of",
]
