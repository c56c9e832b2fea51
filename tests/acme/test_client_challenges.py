"""certbot and lego against Ostiary's ACME with the challenges other than http-01: certbot's
dns-01 through manual hooks, lego's tls-alpn-01, lego's dns-01 wildcard through its ``exec``
provider, and a wildcard refused where only http-01 is enabled.

pebble-challtestsrv (Debian ``pebble``) is the DNS server: the hooks publish the TXT records
through its management API, Ostiary asks it (``--acme-dns-resolver``), and it answers
127.0.0.1 for every A query, so tls-alpn-01 dials loopback at ``--acme-tls-port``.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ostiary.authority.folder import CAMaterial
from ostiary.provisioners.acme import AcmeProvisioner, add_acme_provisioner
from ostiary.store import Store, sqlite_url_for
from tests.acme.conftest import CLAIMS, AcmeServer, free_port
from tests.acme.test_certbot import status_of
from tests.acme.test_lego import run_lego
from tests.acme_validation.conftest import (  # noqa: F401 - the fixture, re-exported
    ChallTestSrv,
    challtestsrv,
)
from tests.conftest import require_tool
from tests.server.conftest import Provisioners
from tests.server.processes import make_ca_folder, start_serve

pytestmark = pytest.mark.slow

#: Every challenge enabled; the refusal below uses ``httponly``.
OPEN = AcmeProvisioner(
    name="open",
    claims=CLAIMS,
    challenges=("http-01", "dns-01", "tls-alpn-01"),
    profiles=("server", "client"),
    default_profile="server",
)
HTTP_ONLY = AcmeProvisioner(
    name="httponly",
    claims=CLAIMS,
    challenges=("http-01",),
    profiles=("server",),
    default_profile="server",
)


@dataclass
class ChallengeServer(AcmeServer):
    """The served CA and the port its tls-alpn-01 validation dials."""

    tls_port: int = 0


@pytest.fixture(scope="module")
def server(
    ca_material: CAMaterial,
    provisioners: Provisioners,
    challtestsrv: ChallTestSrv,  # noqa: F811 - the fixture imported above
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ChallengeServer]:
    """``ca serve`` validating through challtestsrv's DNS, tls-alpn-01 on a free port."""
    folder_path = tmp_path_factory.mktemp("acme-clients")
    url = sqlite_url_for(folder_path / "ca.db")
    folder = make_ca_folder(ca_material, provisioners, url, folder_path / "ca")
    store = Store.from_url(url)
    try:
        for provisioner in (OPEN, HTTP_ONLY):
            add_acme_provisioner(store, provisioner, now=datetime.now(UTC))
    finally:
        store.dispose()
    root_file = folder_path / "root.pem"
    root_file.write_bytes(folder.root.public_bytes(Encoding.PEM))
    http_port, tls_port = free_port(), free_port()
    options = (
        "--acme-http-port",
        str(http_port),
        "--acme-tls-port",
        str(tls_port),
        "--acme-dns-resolver",
        f"127.0.0.1:{challtestsrv.dns_port}",
    )
    process = start_serve(folder, folder_path / "serve.log", options=options)
    try:
        yield ChallengeServer(process, folder, root_file, http_port, tls_port=tls_port)
    finally:
        process.stop()


def hook(path: Path, management: str, body: str) -> Path:
    """An executable Python script that posts to challtestsrv's management API."""
    path.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys, urllib.request\n"
        f"def post(what, body):\n"
        f"    request = urllib.request.Request({management!r} + '/' + what,"
        " data=json.dumps(body).encode(), method='POST')\n"
        "    urllib.request.urlopen(request, timeout=5).read()\n"
        f"{body}"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
        check=False,
    )
    return done


def sans(certificate: x509.Certificate) -> list[str]:
    extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return sorted(extension.value.get_values_for_type(x509.DNSName))


def test_certbot_dns01_through_manual_hooks_with_a_wildcard(
    server: AcmeServer,
    challtestsrv: ChallTestSrv,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    auth = hook(
        tmp_path / "auth",
        challtestsrv.management,
        "post('set-txt', {'host': '_acme-challenge.' + os.environ['CERTBOT_DOMAIN'] + '.',"
        " 'value': os.environ['CERTBOT_VALIDATION']})\n",
    )
    cleanup = hook(
        tmp_path / "cleanup",
        challtestsrv.management,
        "post('clear-txt', {'host': '_acme-challenge.' + os.environ['CERTBOT_DOMAIN'] + '.'})\n",
    )
    home = tmp_path / "certbot"
    done = run(
        [
            require_tool("certbot"),
            "certonly",
            "--server",
            server.directory("open"),
            "--config-dir",
            str(home / "etc"),
            "--work-dir",
            str(home / "work"),
            "--logs-dir",
            str(home / "logs"),
            "--non-interactive",
            "--agree-tos",
            "-m",
            "ops@example.com",
            "--no-eff-email",
            "--cert-name",
            "certbot-dns",
            "--manual",
            "--preferred-challenges",
            "dns",
            "--manual-auth-hook",
            str(auth),
            "--manual-cleanup-hook",
            str(cleanup),
            "-d",
            "certbot.example.test",
            "-d",
            "*.certbot.example.test",
        ],
        {"REQUESTS_CA_BUNDLE": str(server.root_file)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    pem = (home / "etc" / "live" / "certbot-dns" / "cert.pem").read_bytes()
    issued = x509.load_pem_x509_certificate(pem)
    assert sans(issued) == ["*.certbot.example.test", "certbot.example.test"]
    assert status_of(server, issued) == "valid"


def test_lego_tls_alpn01(server: ChallengeServer, tmp_path: Path) -> None:
    home = tmp_path / "lego"
    port = server.tls_port
    done = run_lego(
        server,
        home,
        "open",
        "--tls",
        "--tls.port",
        f"127.0.0.1:{port}",
        "-d",
        "alpn.example.test",
        "run",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    chain = (home / "certificates" / "alpn.example.test.crt").read_bytes()
    issued = x509.load_pem_x509_certificates(chain)[0]
    assert sans(issued) == ["alpn.example.test"]
    assert status_of(server, issued) == "valid"


def test_lego_dns01_wildcard_through_exec_and_refused_through_http01(
    server: AcmeServer,
    challtestsrv: ChallTestSrv,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    script = hook(
        tmp_path / "exec",
        challtestsrv.management,
        "action, fqdn, value = sys.argv[1:4]\n"
        "if action == 'present':\n"
        "    post('set-txt', {'host': fqdn, 'value': value})\n"
        "elif action == 'cleanup':\n"
        "    post('clear-txt', {'host': fqdn})\n",
    )
    home = tmp_path / "lego"
    resolver = f"127.0.0.1:{challtestsrv.dns_port}"
    # --dns.disable-cp: without it lego waits for the zone's authoritative servers, which
    # challtestsrv does not name (no NS/SOA), until its propagation timeout.
    done = run_lego(
        server,
        home,
        "open",
        "--dns",
        "exec",
        "--dns.resolvers",
        resolver,
        "--dns.disable-cp",
        "-d",
        "*.lego.example.test",
        "run",
        env={
            "EXEC_PATH": str(script),
            "EXEC_POLLING_INTERVAL": "1",
            "EXEC_PROPAGATION_TIMEOUT": "30",
        },
    )
    assert done.returncode == 0, done.stdout + done.stderr
    chain = (home / "certificates" / "_.lego.example.test.crt").read_bytes()
    issued = x509.load_pem_x509_certificates(chain)[0]
    assert sans(issued) == ["*.lego.example.test"]
    assert status_of(server, issued) == "valid"

    before = server.certificate_count()
    refused = run_lego(
        server,
        tmp_path / "lego-http",
        "httponly",
        "--http",
        "--http.port",
        f"127.0.0.1:{server.http_port}",
        "-d",
        "*.refused.example.test",
        "run",
    )
    assert refused.returncode != 0
    assert "rejectedIdentifier" in refused.stderr + refused.stdout
    assert "only dns-01 proves a wildcard" in refused.stderr + refused.stdout
    assert server.certificate_count() == before
