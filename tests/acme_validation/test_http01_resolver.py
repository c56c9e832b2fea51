"""http-01 with a configured resolver (``ca serve --acme-dns-resolver``): the names, the
first and a redirect's, are looked up at pebble-challtestsrv's DNS server and not by the
system (they are in no ``/etc/hosts``), and the request carries the name as ``Host``.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from ostiary.acme.validation.base import ChallengeContext, ChallengeFailed, ValidationSettings
from ostiary.acme.validation.http01 import validate_http01
from tests.acme.test_http01 import KEY_AUTHORIZATION, PATH, TOKEN, Site
from tests.acme_validation.conftest import ChallTestSrv


class HostRecordingSite(Site):
    """A :class:`Site` that remembers the ``Host`` header of each request, by path."""

    def __init__(self) -> None:
        super().__init__()
        self.hosts: dict[str, str] = {}
        handler = self.server.RequestHandlerClass
        hosts = self.hosts
        answer = handler.do_GET  # type: ignore[attr-defined]

        def do_get(request: Any) -> None:
            hosts[request.path] = request.headers.get("Host", "")
            answer(request)

        handler.do_GET = do_get  # type: ignore[attr-defined]


@pytest.fixture
def site() -> Iterator[HostRecordingSite]:
    site = HostRecordingSite()
    try:
        yield site
    finally:
        site.server.shutdown()
        site.server.server_close()


def _validate(name: str, site: Site, resolver: tuple[str, int] | None) -> None:
    context = ChallengeContext(
        challenge_type="http-01",
        identifier_type="dns",
        identifier_value=name,
        token=TOKEN,
        key_authorization=KEY_AUTHORIZATION,
    )
    settings = ValidationSettings(http_port=site.port, dns_resolver=resolver, timeout=5)
    asyncio.run(validate_http01(context, settings))


def test_names_are_resolved_at_the_configured_server_and_sent_as_host(
    challtestsrv: ChallTestSrv, site: HostRecordingSite
) -> None:
    name = f"{secrets.token_hex(4)}.http01.example"
    other = f"{secrets.token_hex(4)}.http01.example"
    site.pages[PATH] = (302, {"Location": f"http://{other}:{site.port}/answer"}, b"")
    site.pages["/answer"] = (200, {}, KEY_AUTHORIZATION.encode())
    resolver = ("127.0.0.1", challtestsrv.dns_port)

    _validate(name, site, resolver)
    assert site.hosts == {PATH: f"{name}:{site.port}", "/answer": f"{other}:{site.port}"}

    # The same names through the system resolver: unknown, so the fetch fails (this is
    # what the configured resolver changes).
    with pytest.raises(ChallengeFailed) as failed:
        _validate(name, site, None)
    assert failed.value.problem == "connection"
