"""Name lookups for validation: the configured resolver (tests, split-horizon DNS) or the
system's.

``ValidationSettings.dns_resolver`` is ``(host, port)``: then every lookup a validator makes
(dns-01's TXT record, the address tls-alpn-01 connects to) asks that server and nothing
else. Without it, TXT lookups use the resolvers of ``/etc/resolv.conf`` and addresses come
from the system (``getaddrinfo``, which also reads ``/etc/hosts``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import dns.asyncresolver
import dns.exception
import dns.resolver

from ostiary.acme.validation.base import ChallengeFailed, ValidationSettings


def make_resolver(settings: ValidationSettings) -> dns.asyncresolver.Resolver:
    """A resolver that gives up after ``settings.timeout`` seconds in all; a server without
    any resolver configured fails the challenge (``dns``) rather than raising.
    """
    if settings.dns_resolver is None:
        try:
            resolver = dns.asyncresolver.Resolver(configure=True)
        except dns.resolver.NoResolverConfiguration:
            raise ChallengeFailed(
                "dns", "this server has no DNS resolver configured (/etc/resolv.conf)"
            ) from None
    else:
        host, port = settings.dns_resolver
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = port
    resolver.lifetime = settings.timeout
    resolver.timeout = settings.timeout
    return resolver


async def resolve_addresses(name: str, settings: ValidationSettings) -> list[str]:
    """The addresses of ``name`` (an IP literal is its own address); IPv4 first.

    Raises :class:`ChallengeFailed` (``dns``) when the name has no address or the lookup
    fails or times out.
    """
    try:
        return [str(ipaddress.ip_address(name))]
    except ValueError:
        pass
    if settings.dns_resolver is None:
        return await _system_addresses(name, settings.timeout)
    resolver = make_resolver(settings)
    found: list[str] = []
    for kind in ("A", "AAAA"):
        try:
            answer = await resolver.resolve(name, kind)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except dns.exception.DNSException as exc:
            raise dns_failure(name, exc) from None
        found.extend(record.to_text() for record in answer)
    if not found:
        raise ChallengeFailed("dns", f"{name} has no A or AAAA record")
    return found


async def _system_addresses(name: str, timeout: float) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(name, None, type=socket.SOCK_STREAM), timeout
        )
    except TimeoutError:
        raise ChallengeFailed("dns", f"looking up {name} timed out after {timeout:g} s") from None
    except OSError as exc:
        raise ChallengeFailed("dns", f"{name} has no address: {exc.strerror or exc}") from None
    addresses = [str(info[4][0]) for info in infos]
    addresses.sort(key=lambda a: ":" in a)
    return list(dict.fromkeys(addresses))


def _reason(exc: dns.exception.DNSException) -> str:
    if isinstance(exc, dns.exception.Timeout):
        return "no answer from the DNS server in time"
    if isinstance(exc, dns.resolver.NoNameservers):
        return "every DNS server failed to answer"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def dns_failure(name: str, exc: dns.exception.DNSException) -> ChallengeFailed:
    """One readable line for a failed lookup of ``name``."""
    return ChallengeFailed("dns", f"looking up {name}: {_reason(exc)}")


__all__ = ["dns_failure", "make_resolver", "resolve_addresses"]
