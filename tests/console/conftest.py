"""A real CA server, an officer and a non-officer certificate, and headless Chromium.

The browser is Debian's ``chromium`` driven by Playwright with ``executable_path`` (no
browser download); officers present their client certificate through Playwright's
``client_certificates``. Screenshots land in ``artifacts/console/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.client.conftest import RunningCA, _running_ca, ok
from tests.conftest import require_tool

APPROVAL = "doors"
OFFICER = "officer-alice"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "console"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Identity:
    crt: Path
    key: Path


@dataclass
class Console:
    ca: RunningCA
    officer: Identity
    stranger: Identity
    folder: Path

    def client_args(self) -> list[str]:
        return ["--ca-url", self.ca.url, "--root", str(self.ca.root_file)]

    def officer_args(self, identity: Identity | None = None) -> list[str]:
        """``--cert``/``--key`` of ``identity`` (the officer by default) and the CA to reach."""
        identity = identity or self.officer
        return ["--cert", str(identity.crt), "--key", str(identity.key), *self.client_args()]

    def enroll(self, name: str, *sans: str, stem: str | None = None) -> Identity:
        token = self.ca.token(name, *sans, not_after="1h")
        stem = stem or name
        identity = Identity(self.folder / f"{stem}.crt", self.folder / f"{stem}.key")
        ok(
            "cert",
            "request",
            name,
            identity.crt,
            identity.key,
            "--token",
            token,
            "--not-after",
            "1h",
            *self.client_args(),
        )
        return identity


@pytest.fixture(scope="session")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    yield from console_in(tmp_path_factory.mktemp("console"))


def console_in(folder: Path) -> Iterator[Console]:
    """A running CA in ``folder`` with the approval provisioners, an officer and a stranger
    (a module that submits many requests starts its own: the CA takes 40 from an address).
    """
    for ca in _running_ca(folder):
        ca.ca(
            "provisioner",
            "add",
            APPROVAL,
            "--type",
            "approval",
            "--profile",
            "client",
            "--allow-name",
            "*.door.example",
            "--allow-name",
            "cn:*",
        )
        ca.ca(
            "provisioner",
            "add",
            "open-doors",
            "--type",
            "approval",
            "--profile",
            "client",
            "--no-require-code",
        )
        setup = Console(ca, Identity(Path(), Path()), Identity(Path(), Path()), folder)
        setup.officer = setup.enroll(OFFICER)
        ca.ca("officer", "add", OFFICER, "--cert", setup.officer.crt)
        setup.stranger = setup.enroll("bob")
        yield setup


@pytest.fixture(scope="module")  # not session: its event loop would outlive the module
def browser() -> Iterator[Any]:
    chromium = require_tool("chromium")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def browser_context(
    browser: Any, console: Console, identity: Identity | None, **options: Any
) -> Any:
    """A browser profile, presenting ``identity``'s certificate to the CA (or none)."""
    certificates = []
    if identity is not None:
        certificates = [
            {"origin": console.ca.url, "certPath": str(identity.crt), "keyPath": str(identity.key)}
        ]
    return browser.new_context(
        ignore_https_errors=True,  # the CA's TLS certificate chains to our own root
        client_certificates=certificates,
        **options,
    )


def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=False)
