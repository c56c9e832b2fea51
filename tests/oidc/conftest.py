"""A real OpenID provider (oidc-provider-mock) on loopback, and a test "browser" for it.

The provider runs as a subprocess (``python -m oidc_provider_mock``) bound to 127.0.0.1 on a
free port, with nonces required; its issuer is ``http://127.0.0.1:<port>``. The tests play
the browser over HTTP: the authorization endpoint shows a form that takes ``sub``; posting it
redirects to the client's ``redirect_uri`` with a code; ``action=deny`` redirects with
``error=access_denied``. User claims are set with ``PUT /users/<sub>``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from ostiary.authority.authority import Authority
from ostiary.authority.folder import CAMaterial, CAPaths, init_ca_folder
from ostiary.config import CAConfig
from ostiary.provisioners import CAIdentity
from ostiary.store import Store, migrate, sqlite_url_for

from ..client.conftest import RunningCA, free_port
from .sign_in_cli import kill_unfinished

PASSWORD = b"oidc tests password"
CLIENT_ID = "ostiary-tests"
PUBLIC = "corp"
CONFIDENTIAL = "corp-app"
UNREACHABLE = "gone"
SECRET = "s3cret-never-sent-to-clients"
#: A private-arc OID an Entra authentication binding rule can map to multifactor.
MFA_POLICY = "1.3.6.1.4.1.55555.1.2"


@dataclass
class Provider:
    """The running provider."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def configuration_endpoint(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def set_user(self, sub: str, **claims: Any) -> None:
        response = httpx.put(f"{self.issuer}/users/{sub}", json=claims)
        assert response.status_code == 204, response.text

    def sign_in(self, authorization_url: str, sub: str, *, follow: bool = True) -> str:
        """Play the browser: show the form, submit ``sub``; the redirect target (followed)."""
        with httpx.Client(timeout=60) as browser:
            form = browser.get(authorization_url)
            assert form.status_code == 200, form.text
            answer = browser.post(authorization_url, data={"sub": sub})
            assert answer.status_code == 302, answer.text
            location = answer.headers["location"]
            if follow:
                browser.get(location)
        return location

    def deny(self, authorization_url: str) -> str:
        with httpx.Client(timeout=60) as browser:
            answer = browser.post(authorization_url, data={"action": "deny"})
            assert answer.status_code == 302, answer.text
            location = answer.headers["location"]
            browser.get(location)
        return location

    def id_token(
        self,
        sub: str,
        *,
        nonce: str,
        client_id: str = CLIENT_ID,
        host: str = "127.0.0.1",
        scope: str = "openid email profile",
    ) -> str:
        """An ID token straight from the provider (code flow without a listener)."""
        base = f"http://{host}:{self.port}"
        redirect_uri = "http://127.0.0.1:9/callback"
        query = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": "s",
            "nonce": nonce,
        }
        location = self.sign_in(f"{base}/oauth2/authorize?{urlencode(query)}", sub, follow=False)
        code = parse_qs(urlsplit(location).query)["code"][0]
        answer = httpx.post(
            f"{base}/oauth2/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "client_id": client_id,
                "client_secret": "unused",
            },
        )
        assert answer.status_code == 200, answer.text
        return str(answer.json()["id_token"])


def _start_provider(log: Path) -> Iterator[Provider]:
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-W",
                "ignore",
                "-m",
                "oidc_provider_mock",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--require-nonce",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    provider = Provider(port, process)
    try:
        deadline = time.monotonic() + 60  # a ceiling: a loaded machine starts it slowly
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the provider exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(provider.configuration_endpoint).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the provider did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield provider
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(autouse=True)
def cert_requests_cleaned() -> Iterator[None]:
    """No ``cert request`` a test started outlives it (tests/oidc/sign_in_cli.py)."""
    yield
    kill_unfinished()


@pytest.fixture(scope="session")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    yield from _start_provider(tmp_path_factory.mktemp("provider") / "provider.log")


@pytest.fixture(scope="session")
def other_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    """A second provider with its own signing key."""
    yield from _start_provider(tmp_path_factory.mktemp("provider2") / "provider.log")


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> CAMaterial:
    paths = CAPaths(tmp_path_factory.mktemp("ca"))
    now = datetime.now(UTC) - timedelta(hours=1)
    return init_ca_folder(
        paths, CAConfig(name="OIDC Tests", url="http://127.0.0.1:9"), PASSWORD, now=now
    )


@pytest.fixture
def identity(material: CAMaterial) -> CAIdentity:
    return CAIdentity.from_certificates(
        material.root, material.intermediate, claims=material.config.claims
    )


@pytest.fixture
def authority(material: CAMaterial, tmp_path: Path) -> Iterator[Authority]:
    store = Store.from_url(sqlite_url_for(tmp_path / "ostiary.db"))
    migrate(store.engine)
    try:
        yield Authority(material, store, clock=lambda: datetime.now(UTC))
    finally:
        store.dispose()


@pytest.fixture(scope="session")
def oidc_ca(tmp_path_factory: pytest.TempPathFactory, provider: Provider) -> Iterator[RunningCA]:
    folder = tmp_path_factory.mktemp("oidc-ca")
    password_file = folder / "password"
    password_file.write_text("oidc enrollment tests\n")
    secret_file = folder / "client-secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    ca = RunningCA(folder / "ca", password_file)
    ca.init()
    common = ["--client-id", CLIENT_ID, "--domains", "corp.example", "--min-lifetime", "10s",
              "--default-lifetime", "1h", "--max-lifetime", "1d"]  # fmt: skip
    endpoint = ["--configuration-endpoint", provider.configuration_endpoint]
    ca.ca("provisioner", "add", PUBLIC, "--type", "oidc", *endpoint, *common)
    ca.ca("provisioner", "add", CONFIDENTIAL, "--type", "oidc", *endpoint, *common,
          "--client-secret-file", str(secret_file), "--policy-oid", MFA_POLICY)  # fmt: skip
    nowhere = f"http://127.0.0.1:{free_port()}/.well-known/openid-configuration"
    ca.ca("provisioner", "add", UNREACHABLE, "--type", "oidc",
          "--configuration-endpoint", nowhere, "--no-check", *common)  # fmt: skip
    ca.start()
    try:
        yield ca
    finally:
        ca.stop()
