"""The issuing CA a client did not send and the ``ca_roots`` files do not hold, fetched once
from the URL in the certificate's Authority Information Access ``caIssuers`` (RFC 5280
4.2.2.1) and kept.

What is fetched is never trusted by itself: it only helps the verifier build a path to the
pinned roots (:mod:`ostiary.gateway.trust`), which checks every signature again. Fetching is
still bounded, since the URL comes from a certificate a client presents: only ``http`` and
``https`` URLs without user information, at most ``_MAX_URLS`` per certificate, no redirects,
a short timeout, at most ``_MAX_BYTES`` read, one fetch at a time per URL (concurrent
handshakes wait for it), a failure remembered for ``negative_seconds`` (no fetch per
connection), and at most ``_FETCHES_PER_MINUTE`` fetches a minute in all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID

log = logging.getLogger("ostiary.gateway")

_MAX_URLS = 2
_MAX_URL_LENGTH = 2048
_MAX_BYTES = 64 * 1024
_MAX_CACHED = 256
_FETCHES_PER_MINUTE = 30


def ca_issuers_urls(certificate: x509.Certificate) -> list[str]:
    """The ``caIssuers`` URLs of ``certificate`` that may be fetched (http/https only)."""
    try:
        aia = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    except (x509.ExtensionNotFound, ValueError):
        return []
    urls = []
    for description in aia.value:
        location = description.access_location
        if description.access_method != AuthorityInformationAccessOID.CA_ISSUERS or not (
            isinstance(location, x509.UniformResourceIdentifier)
        ):
            continue
        url = location.value
        if len(url) > _MAX_URL_LENGTH:
            continue
        try:
            parts = urlsplit(url)
        except ValueError:
            continue
        if parts.scheme in ("http", "https") and parts.hostname and "@" not in parts.netloc:
            urls.append(url)
    return urls[:_MAX_URLS]


class IssuerFetcher:
    """Fetched issuing CAs by URL, failures for a while; one per gateway process."""

    def __init__(self, *, timeout_seconds: float, negative_seconds: float = 60.0) -> None:
        self.negative_seconds = negative_seconds
        self.fetches = 0
        # Synchronous client in a worker thread, as for revocation: short blocking fetches.
        self._http = httpx.Client(timeout=timeout_seconds, follow_redirects=False)
        self._found: dict[str, x509.Certificate] = {}
        self._failed: dict[str, float] = {}  # URL -> monotonic time of the failure
        self._locks: dict[str, asyncio.Lock] = {}
        self._recent: deque[float] = deque()

    def close(self) -> None:
        self._http.close()

    async def issuer_of(self, certificate: x509.Certificate) -> x509.Certificate | None:
        """A certificate named as ``certificate``'s issuer, from its caIssuers URLs, or None.
        The caller checks that it really is the issuer (the path verifier does).
        """
        for url in ca_issuers_urls(certificate):
            found = await self._get(url)
            if found is not None and found.subject == certificate.issuer:
                return found
        return None

    async def _get(self, url: str) -> x509.Certificate | None:
        if (found := self._found.get(url)) is not None:
            return found
        if self._failed_recently(url):
            return None
        lock = self._locks.setdefault(url, asyncio.Lock())
        async with lock:
            if (found := self._found.get(url)) is not None:
                return found
            if self._failed_recently(url):
                return None
            if not self._may_fetch():
                log.warning(
                    "not fetching %s: over %d issuer fetches a minute", url, _FETCHES_PER_MINUTE
                )
                return None
            self.fetches += 1
            found = await asyncio.to_thread(self._fetch, url)
            self._locks.pop(url, None)
            if found is None:
                if len(self._failed) >= _MAX_CACHED:
                    self._failed.clear()
                self._failed[url] = time.monotonic()
                return None
            if len(self._found) >= _MAX_CACHED:
                self._found.clear()
            self._found[url] = found
            log.info("fetched issuing CA %s from %s", found.subject.rfc4514_string(), url)
            return found

    def _failed_recently(self, url: str) -> bool:
        failed_at = self._failed.get(url)
        return failed_at is not None and time.monotonic() - failed_at < self.negative_seconds

    def _may_fetch(self) -> bool:
        now = time.monotonic()
        while self._recent and now - self._recent[0] > 60:
            self._recent.popleft()
        if len(self._recent) >= _FETCHES_PER_MINUTE:
            return False
        self._recent.append(now)
        return True

    def _fetch(self, url: str) -> x509.Certificate | None:
        """One GET, at most ``_MAX_BYTES``; DER (RFC 5280 4.2.2.1) or, leniently, PEM."""
        try:
            with self._http.stream("GET", url) as answer:
                if answer.status_code != 200:
                    log.warning("issuer fetch %s: HTTP %d", url, answer.status_code)
                    return None
                body = bytearray()
                for chunk in answer.iter_bytes():
                    body += chunk
                    if len(body) > _MAX_BYTES:
                        log.warning("issuer fetch %s: more than %d bytes", url, _MAX_BYTES)
                        return None
        except httpx.HTTPError as exc:
            log.warning("issuer fetch %s: %s", url, type(exc).__name__)
            return None
        data = bytes(body)
        try:
            if data.lstrip().startswith(b"-----BEGIN"):
                return x509.load_pem_x509_certificate(data)
            return x509.load_der_x509_certificate(data)
        except ValueError:
            log.warning("issuer fetch %s: not a certificate", url)
            return None
