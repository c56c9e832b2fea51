"""A real ``ostiary ca serve`` with SCEP provisioners, made with the ``ostiary`` command."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs7

from ostiary.authority.folder import CAPaths
from ostiary.config import load_config
from ostiary.store import CertificateRecord, Store
from tests.server.processes import CAFolder, ServeProcess, start_serve

PASSWORD = "scep test password"


def ostiary(home: Path, *args: str) -> str:
    """Run ``ostiary ARGS`` against the CA in ``home``; its stdout (fails the test if it fails)."""
    done = subprocess.run(
        [sys.executable, "-c", "from ostiary.cli.main import main; main()", *args],
        env={**os.environ, "OSTIARY_HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"ostiary {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@dataclass
class ScepServer:
    home: Path
    password_file: Path
    serve: ServeProcess

    def url(self, name: str) -> str:
        return f"{self.serve.http_url}/scep/{name}"

    def plain(self) -> httpx.Client:
        return self.serve.plain()

    def challenge(self, provisioner: str, subject: str, *sans: str, ttl: str = "1h") -> str:
        """A one-time challenge, made in-process (``ca scep challenge`` is run by the CLI test)."""
        from ostiary.core.lifetime import parse_duration
        from ostiary.provisioners.scep import make_challenge

        with self.store() as store:
            made = make_challenge(
                store, provisioner, subject=subject, sans=sans, ttl=parse_duration(ttl),
                now=datetime.now(UTC), actor="test",
            )  # fmt: skip
        return made.value

    @contextmanager
    def store(self) -> Iterator[Store]:
        config = load_config(CAPaths(self.home).config)
        store = Store.from_url(CAPaths(self.home).database_url(config))
        try:
            yield store
        finally:
            store.dispose()

    def ca_certs(self, name: str) -> list[x509.Certificate]:
        """GetCACert's certificates: the RA (not a CA), then the CAs."""
        with self.plain() as http:
            answer = http.get(f"/scep/{name}", params={"operation": "GetCACert"})
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/x-x509-ca-ra-cert"
        certificates = pkcs7.load_der_pkcs7_certificates(answer.content)
        return sorted(certificates, key=_is_ca)

    def count_certificates(self) -> int:
        with self.store() as store, store.transaction(read_only=True) as session:
            return session.query(CertificateRecord).count()


def _is_ca(certificate: x509.Certificate) -> bool:
    return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def start_ca(
    tmp: Path, key_type: str, provisioners: list[tuple[str, ...]], name: str = "Scep Test"
) -> ScepServer:
    """A CA made with ``ostiary ca init`` and ``ca provisioner add NAME ARGS`` for each of
    ``provisioners``, served by ``ostiary ca serve`` on free loopback ports.
    """
    home = tmp / "ca"
    password_file = tmp / "password"
    password_file.write_text(PASSWORD + "\n")
    pw = ("--password-file", str(password_file))
    ostiary(home, "ca", "init", "--name", name, "--key-type", key_type, *pw)
    for provisioner in provisioners:
        ostiary(home, "ca", "provisioner", "add", *provisioner, *pw)
    paths = CAPaths(home)
    config = load_config(paths.config)
    folder = CAFolder(
        paths,
        password_file,
        paths.database_url(config),
        x509.load_pem_x509_certificate(paths.root_certificate.read_bytes()),
        x509.load_pem_x509_certificate(paths.intermediate_certificate.read_bytes()),
    )
    return ScepServer(home, password_file, start_serve(folder, tmp / "serve.log"))


def _make(tmp: Path, key_type: str) -> ScepServer:
    return start_ca(
        tmp,
        key_type,
        [
            ("devices", "--type", "scep", "--profile", "client"),
            ("users", "--type", "scep", "--profile", "user"),
            ("gated", "--type", "scep", "--require-approval"),
        ],
    )


@pytest.fixture(scope="session")
def rsa_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScepServer]:
    """An all-RSA CA (micromdm's scepclient encrypts to every certificate of GetCACert)."""
    server = _make(tmp_path_factory.mktemp("scep-rsa"), "rsa2048")
    yield server
    server.serve.stop()


@pytest.fixture(scope="session")
def ec_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScepServer]:
    """A P-256 CA: the RSA RA in front of it is what devices encrypt to."""
    server = _make(tmp_path_factory.mktemp("scep-ec"), "p256")
    yield server
    server.serve.stop()
