"""Where the CA listens for plain HTTP, and the URL its certificates name: kept in step.

Every certificate names the CA's plain-HTTP listener in its CRL distribution point and AIA
(``url`` in ``ostiary.toml``). ``ca init`` stores the listener's address (``http_address``)
next to the URL, taking the port of an ``http://`` URL when no ``--http-address`` is given,
so that ``ca serve`` listens where the certificates point. ``ca serve`` refuses to start when
the URL names this machine (its listening host, or loopback) on another port than the one it
would listen on: every relying party would fetch CRLs from a closed port. A URL naming
another host (a reverse proxy, a port forward) is left alone.

``https://`` there is allowed but warned about at ``ca init``: RFC 5280 (section 4.2.1.13)
recommends http for CRL locations, fetchers must not need the CA to check the CA, Entra CBA
fetches CRLs over http, and Ostiary's own gateway checks those fetches' TLS against the
system trust store, so it refuses every client of a private CA whose URLs are https.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from ostiary.cli.console import err
from ostiary.config import parse_address
from ostiary.core.errors import BadRequest

_LOOPBACK_NAMES = ("localhost", "localhost.localdomain")


def init_http_address(address: str, url: str | None) -> str | None:
    """The plain-HTTP listener ``ca init`` stores when none is given: the HTTPS host and
    the port an ``http://`` URL names. None without such a URL (``ca serve`` then takes the
    HTTPS host, port 8080), or when ``address`` is not valid (the settings model says why).
    """
    port = _url_port(url) if url and url.lower().startswith("http://") else None
    if port is None:
        return None
    try:
        host, _ = parse_address(address)
    except ValueError:
        return None
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}"


def warn_https_url(url: str | None) -> None:
    """Warn (on stderr, once) that an https base URL makes CRL/OCSP/AIA locations https."""
    if url is None or not url.lower().startswith("https://"):
        return
    err.print(
        f"warning: --url {url} puts https:// CRL, OCSP and CA-certificate locations into "
        "every certificate. RFC 5280 recommends http there, Entra CBA fetches CRLs over "
        "http, and 'ostiary gateway' checks those fetches against the system trust store, "
        "so it would refuse every client. Prefer --url http://HOST:PORT, served by the "
        "plain-HTTP listener (--http-address).",
        markup=False,
        highlight=False,
    )


def check_url_matches_listener(url: str | None, http_address: str) -> None:
    """Refuse a base URL that names this listener's host (or loopback) on another port."""
    if url is None or not url.lower().startswith("http://"):
        return
    try:
        listen_host, listen_port = parse_address(http_address)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    url_port = _url_port(url) or 80
    url_host = (urlsplit(url).hostname or "").lower()
    if listen_port == 0 or url_port == listen_port:
        return
    if not (_is_loopback(url_host) or url_host == listen_host.lower()):
        return  # another host: a proxy or a port forward may well map the port
    raise BadRequest(
        f"certificates point at {url} but the plain-HTTP listener would be {http_address}, "
        f"so CRL and OCSP fetches would find nothing: give --http-address "
        f"{listen_host if ':' not in listen_host else f'[{listen_host}]'}:{url_port} "
        "(or set http_address in ostiary.toml to match url)"
    )


def _url_port(url: str | None) -> int | None:
    if url is None:
        return None
    try:
        return urlsplit(url).port
    except ValueError:
        return None


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
