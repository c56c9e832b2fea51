"""Listening sockets, the plain-HTTP default and the URL certificates point at."""

from __future__ import annotations

import socket

import pytest

from ostiary.config import CAConfig, default_http_address
from ostiary.core.errors import BadRequest
from ostiary.server.runner import bind, public_url, server_certificate_spec


@pytest.mark.parametrize(
    ("https", "http"),
    [
        pytest.param("127.0.0.1:8443", "127.0.0.1:8080", id="ok/ipv4"),
        pytest.param("ca.example:443", "ca.example:8080", id="ok/name"),
        pytest.param("[::1]:8443", "[::1]:8080", id="ok/ipv6"),
        pytest.param("127.0.0.1:0", "127.0.0.1:0", id="ok/any-port"),
    ],
)
def test_the_plain_http_address_defaults_to_port_8080_on_the_https_host(
    https: str, http: str
) -> None:
    assert default_http_address(https) == http


def test_listeners_are_tcp_sockets_that_asyncio_sets_nodelay_on() -> None:
    with bind("127.0.0.1:0") as listener:
        assert listener.proto == socket.IPPROTO_TCP
        assert listener.getsockname()[1] > 0


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:http", ":8443", "127.0.0.1:70000"])
def test_a_bad_address_is_refused(address: str) -> None:
    with pytest.raises(BadRequest):
        bind(address)


def test_a_port_in_use_is_a_clear_error() -> None:
    with bind("127.0.0.1:0") as taken:
        port = taken.getsockname()[1]
        with pytest.raises(BadRequest, match=f"cannot listen on 127.0.0.1:{port}"):
            bind(f"127.0.0.1:{port}")


def test_certificates_point_at_the_configured_url_else_the_plain_listener() -> None:
    with bind("127.0.0.1:0") as listener, bind("0.0.0.0:0") as wildcard:
        port, wild_port = listener.getsockname()[1], wildcard.getsockname()[1]
        assert public_url(CAConfig(name="T"), listener) == f"http://127.0.0.1:{port}"
        configured = CAConfig(name="T", url="https://pki.example/")
        assert public_url(configured, listener) == "https://pki.example"
        named = CAConfig(name="T", dns=("ca.example",))
        assert public_url(named, wildcard) == f"http://ca.example:{wild_port}"


def test_the_server_certificate_names_the_dns_names_the_host_and_loopback() -> None:
    with bind("127.0.0.1:0") as listener:
        spec = server_certificate_spec(CAConfig(name="T", dns=("ca.example",)), listener)
    assert [n.value for n in spec.names][:1] == ["ca.example"]
    assert {str(n.value) for n in spec.names} == {"ca.example", "127.0.0.1", "localhost"}
    assert spec.profile == "server"
