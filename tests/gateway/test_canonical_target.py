"""Route rules are checked on the canonical target, and the upstream receives that target
(issue 22, finding 1): our gateway in front of a real Starlette app under uvicorn, which
decodes the path before it routes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ostiary.core.errors import BadRequest, MalformedInput
from ostiary.gateway.config import Route, load_gateway_config
from ostiary.gateway.identity import route_for
from ostiary.gateway.server import Gateway
from ostiary.gateway.target import canonical_path, canonical_target
from tests.gateway.conftest import CA, Issued, gateway_config, run_gateway
from tests.gateway.real_upstreams import Reached, exchange, starlette_upstream

HARDWARE_POLICY = "1.3.6.1.4.1.99999.7.1"


@pytest.fixture(scope="module")
def app() -> Iterator[Reached]:
    with starlette_upstream() as reached:
        yield reached


@pytest.fixture(scope="module")
def gateway(ca: CA, app: Reached) -> Iterator[Gateway]:
    routes = (Route(prefix="/"), Route(prefix="/vault", policy_oids=(HARDWARE_POLICY,)))
    with run_gateway(gateway_config(ca, f"http://127.0.0.1:{app.port}", routes=routes)) as gw:
        yield gw


@pytest.fixture(scope="module")
def software(ca: CA) -> Issued:
    """A client without the vault's policy OID."""
    return ca.issue("sw", ("email:sw@example.com",))


@pytest.fixture(scope="module")
def hardware(ca: CA) -> Issued:
    """A client with the vault's policy OID."""
    return ca.issue("hw", ("email:hw@example.com",), policies=(HARDWARE_POLICY,))


def get(target: bytes) -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: door.example\r\nConnection: close\r\n\r\n"


def websocket(target: bytes) -> bytes:
    return (
        b"GET " + target + b" HTTP/1.1\r\nHost: door.example\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("head", "status"),
    [
        pytest.param(get(b"/vault/secret"), 403, id="fail/plain"),
        pytest.param(get(b"/%76ault/secret"), 403, id="fail/encoded-unreserved"),
        pytest.param(get(b"/vault%2fsecret"), 400, id="fail/encoded-slash"),
        pytest.param(get(b"/vault%2Fsecret"), 400, id="fail/encoded-slash-upper"),
        pytest.param(get(b"/vault%5csecret"), 400, id="fail/encoded-backslash"),
        pytest.param(get(b"/%2e%2e/vault/secret"), 400, id="fail/encoded-dots"),
        pytest.param(get(b"/vault%3bx/secret"), 400, id="fail/encoded-semicolon"),
        pytest.param(get(b"/vault;x=1/secret"), 400, id="fail/path-parameter"),
        pytest.param(get(b"http://localhost/vault/secret"), 400, id="fail/absolute-form"),
        pytest.param(
            b"CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n\r\n",
            400,
            id="fail/authority-form",
        ),
        pytest.param(get(b"*").replace(b"GET", b"OPTIONS"), 400, id="fail/asterisk-form"),
        pytest.param(get(b"/vault#x"), 400, id="fail/fragment"),
        pytest.param(get(b"/vault?x#y"), 400, id="fail/fragment-after-query"),
        pytest.param(get(b"/x/../vault/secret"), 403, id="fail/dot-dot"),
        pytest.param(get(b"//vault/secret"), 403, id="fail/double-slash"),
        pytest.param(get(b"/./vault/secret"), 403, id="fail/dot"),
        pytest.param(get(b"/%zz/vault"), 400, id="fail/bad-percent"),
        pytest.param(websocket(b"/%76ault/ws"), 403, id="fail/websocket-encoded"),
        pytest.param(websocket(b"/ws/../vault/ws"), 403, id="fail/websocket-dot-dot"),
    ],
)
def test_refused_target_never_reaches_the_upstream(
    ca: CA, gateway: Gateway, app: Reached, software: Issued, head: bytes, status: int
) -> None:
    reason = "policy-missing" if status == 403 else "bad-request"
    counted = gateway.metrics.refused[reason]
    mark = app.mark()
    answer, body = exchange(ca, software, gateway.port, head)
    assert answer == status, body
    assert body.startswith(b"forbidden: policy-missing" if status == 403 else b"bad request: ")
    assert gateway.metrics.refused[reason] == counted + 1  # counted before it is answered
    # A request that went through first would have been answered first: check after a twin.
    twin, _ = exchange(ca, software, gateway.port, get(b"/public/after"))
    assert twin == 200
    assert [r["raw_path"] for r in app.since(mark)] == ["/public/after"]


@pytest.mark.parametrize(
    ("client", "target", "path", "query"),
    [
        pytest.param("software", b"/public/x", "/public/x", "", id="ok/public"),
        pytest.param("hardware", b"/vault/secret", "/vault/secret", "", id="ok/vault-with-oid"),
        pytest.param(
            "hardware", b"/%76ault//a/./b/../secret", "/vault/a/secret", "", id="ok/rewritten"
        ),
        pytest.param(
            "software",
            b"/public/x?next=%2Fvault%2Fsecret&a=%2e%2e",
            "/public/x",
            "next=%2Fvault%2Fsecret&a=%2e%2e",
            id="ok/encoded-slash-in-query",
        ),
        pytest.param("software", b"/vaultx/y", "/vaultx/y", "", id="ok/prefix-is-by-segment"),
        pytest.param("software", b"/VAULT/secret", "/VAULT/secret", "", id="ok/case-sensitive"),
        pytest.param(
            "software", b"/caf%c3%a9/%7euser", "/caf%C3%A9/~user", "", id="ok/hex-upper-cased"
        ),
        pytest.param("software", b"/a/../../..", "/", "", id="ok/never-above-root"),
    ],
)
def test_allowed_target_reaches_the_upstream_in_canonical_form(
    ca: CA,
    gateway: Gateway,
    app: Reached,
    request: pytest.FixtureRequest,
    client: str,
    target: bytes,
    path: str,
    query: str,
) -> None:
    issued: Issued = request.getfixturevalue(client)
    mark = app.mark()
    status, body = exchange(ca, issued, gateway.port, get(target))
    assert status == 200, body
    (record,) = app.since(mark)
    assert record["raw_path"] == path
    assert record["query"] == query
    assert json.loads(body)["raw_path"] == path


def test_websocket_upgrade_is_routed_and_forwarded_on_the_canonical_path(
    ca: CA, gateway: Gateway, app: Reached, hardware: Issued
) -> None:
    mark = app.mark()
    status, _ = exchange(ca, hardware, gateway.port, websocket(b"/%76ault/./ws"))
    assert status == 101
    (record,) = app.since(mark)
    assert record["kind"] == "websocket"
    assert record["raw_path"] == "/vault/ws"


def test_case_insensitive_route_covers_every_case(ca: CA, app: Reached, software: Issued) -> None:
    """For an upstream that routes without regard to case, a route says so; then /VAULT is
    the vault too (off by default: /VAULT/secret passes above)."""
    routes = (
        Route(prefix="/"),
        Route(prefix="/vault", policy_oids=(HARDWARE_POLICY,), case_insensitive=True),
    )
    config = gateway_config(ca, f"http://127.0.0.1:{app.port}", routes=routes)
    with run_gateway(config) as gw:
        mark = app.mark()
        for target in (b"/VAULT/secret", b"/Vault", b"/%56ault/x"):
            status, body = exchange(ca, software, gw.port, get(target))
            assert (status, body) == (403, b"forbidden: policy-missing\n")
        status, _ = exchange(ca, software, gw.port, get(b"/VAULTX/secret"))
        assert status == 200
        assert [r["raw_path"] for r in app.since(mark)] == ["/VAULTX/secret"]


def test_route_prefix_is_matched_by_whole_segments_in_canonical_form() -> None:
    routes = (Route(prefix="/"), Route(prefix="/%76ault/"), Route(prefix="/Admin"))
    assert routes[1].prefix == "/vault/"
    assert route_for("/vault", routes) is routes[1]
    assert route_for("/vault/x", routes) is routes[1]
    assert route_for("/vaultx", routes) is routes[0]
    assert route_for("/admin", routes) is routes[0]
    assert not Route().case_insensitive
    for bad in ("vault", "/vault;x", "/vault%2F", "/vault?x", "/vault#x"):
        with pytest.raises(ValueError, match="prefix"):
            Route(prefix=bad)


_TARGET_BYTES = st.binary(max_size=40).map(lambda b: b"/" + b.replace(b"#", b""))


@given(_TARGET_BYTES)
def test_canonical_form_is_a_fixed_point_without_dot_or_empty_segments(raw: bytes) -> None:
    """Whatever path comes in, what goes out is canonical again (the upstream cannot read it
    any other way than we did) and has no ``.``, ``..``, empty segment or encoded unreserved
    character."""
    try:
        path, target = canonical_target(raw)
    except MalformedInput:
        return
    assert canonical_target(target) == (path, target)
    assert canonical_path(path) == path
    segments = path.split(b"/")[1:]
    if segments[-1] == b"":  # a trailing '/'
        segments.pop()
    assert all(s not in (b"", b".", b"..") for s in segments)
    assert path.isascii()


def test_plain_targets_pass_unchanged() -> None:
    for target in (b"/", b"/a/b-c_d.e~f", b"/a/", b"/a?b=%2F&c=..//", b"/.well-known/x"):
        assert canonical_target(target)[1] == target


def test_route_options_load_from_the_toml_file_and_a_bad_prefix_is_one_readable_error(
    ca: CA, tmp_path: Path
) -> None:
    common = (
        'upstream = "http://127.0.0.1:9"\n'
        f'ca_roots = ["{ca.ca_file}"]\ncert = "{ca.server.cert_file}"\n'
        f'key = "{ca.server.key_file}"\n'
    )
    good = tmp_path / "good.toml"
    good.write_text(common + '[[routes]]\nprefix = "/%76ault/"\ncase_insensitive = true\n')
    (route,) = load_gateway_config(good, {}).routes
    assert (route.prefix, route.case_insensitive) == ("/vault/", True)
    bad = tmp_path / "bad.toml"
    bad.write_text(common + '[[routes]]\nprefix = "/vault%2Fsecret"\n')
    with pytest.raises(BadRequest, match="must not encode '/'") as caught:
        load_gateway_config(bad, {})
    assert "\n" not in str(caught.value)
