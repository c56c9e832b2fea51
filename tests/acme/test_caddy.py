"""Caddy (Debian) as an ACME client of Ostiary: it gets its own server certificate over
http-01 and serves HTTPS with it, and its ``client_auth``, trusting the same CA, admits a
client certificate our client got over ACME and refuses a request without one.

The Caddyfile is the one docs/acme.md shows, with loopback ports and this test's files.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from tests.acme.conftest import AcmeServer, free_port
from tests.client.conftest import ok
from tests.conftest import require_tool
from tests.guides.markdown import parse_guide

pytestmark = pytest.mark.slow

#: Caddy's site: a name that resolves to 127.0.0.1 here (/etc/hosts).
SITE = "vm"
DOC_URL = "https://ca.example.net/acme/web/directory"
DOC_ROOT = "/etc/caddy/ostiary-root.crt"
DOC_SITE = "app.example.net"


def documented_caddyfile() -> str:
    guide = parse_guide(Path(__file__).parents[2] / "docs" / "acme.md")
    (block,) = [b for b in guide.blocks if b.language == "caddyfile" and "# Caddyfile" in b.text]
    return block.text


def caddyfile(server: AcmeServer, https_port: int, data: Path) -> str:
    """The documented file, pointed at this server, on loopback ports, storing in ``data``."""
    text = documented_caddyfile()
    for old in (DOC_URL, DOC_ROOT, DOC_SITE):
        assert old in text, f"docs/acme.md's Caddyfile no longer has {old}"
    text = text.replace(DOC_URL, server.directory())
    text = text.replace(DOC_ROOT, str(server.root_file))
    text = text.replace(f"{DOC_SITE} {{", f"{SITE} {{\n\tbind 127.0.0.1")
    test_options = (
        f"\tadmin off\n\thttp_port {server.http_port}\n\thttps_port {https_port}\n"
        f"\tstorage file_system {data}\n\tskip_install_trust\n"
    )
    return text.replace("{\n", "{\n" + test_options, 1)


@contextmanager
def running_caddy(config: Path, home: Path) -> Iterator[subprocess.Popen[bytes]]:
    environment = {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / "data"),
                   "XDG_CONFIG_HOME": str(home / "config")}  # fmt: skip
    with (home / "caddy.log").open("wb") as log:
        process = subprocess.Popen(
            [require_tool("caddy"), "run", "--config", str(config), "--adapter", "caddyfile"],
            stdout=log, stderr=log, env=environment, start_new_session=True,
        )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(30)


def served_certificate(
    port: int, root: Path, log: Path, process: subprocess.Popen[bytes]
) -> x509.Certificate:
    """The certificate Caddy serves for :data:`SITE`, once it has one our root verifies."""
    context = ssl.create_default_context(cafile=str(root))
    deadline = time.monotonic() + 90
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname=SITE) as tls:
                    der = tls.getpeercert(binary_form=True)
                    assert der is not None
                    return x509.load_der_x509_certificate(der)
        except (OSError, ssl.SSLError):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Caddy serves no certificate from Ostiary:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)


def test_caddy_serves_its_ostiary_certificate_and_admits_only_ostiary_clients(
    own_acme_server: AcmeServer, tmp_path: Path
) -> None:
    # The client certificate first, from our own client answering http-01 on the port the
    # server validates (Caddy takes that port next).
    client_crt, client_key = tmp_path / "client.crt", tmp_path / "client.key"
    ok("cert", "request", SITE, client_crt, client_key, "--acme", own_acme_server.directory(),
       "--profile", "client", "--root", own_acme_server.root_file,
       "--http-01-port", str(own_acme_server.http_port),
       "--http-01-address", "127.0.0.1")  # fmt: skip
    client_leaf = x509.load_pem_x509_certificates(client_crt.read_bytes())[0]
    client_eku = client_leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(client_eku) == [x509.ExtendedKeyUsageOID.CLIENT_AUTH]

    https_port = free_port()
    home = tmp_path / "caddy"
    home.mkdir()
    config = home / "Caddyfile"
    config.write_text(caddyfile(own_acme_server, https_port, home / "storage"))
    with running_caddy(config, home) as process:
        served = served_certificate(
            https_port, own_acme_server.root_file, home / "caddy.log", process
        )
        assert served.issuer == own_acme_server.folder.intermediate.subject
        sans = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.DNSName) == [SITE]
        server_eku = served.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(server_eku) == [x509.ExtendedKeyUsageOID.SERVER_AUTH]

        url = f"https://{SITE}:{https_port}/"
        with_certificate = ssl.create_default_context(cafile=str(own_acme_server.root_file))
        with_certificate.load_cert_chain(client_crt, client_key)
        admitted = httpx.get(url, verify=with_certificate, timeout=30)
        assert admitted.status_code == 200
        assert admitted.text == f"hello {client_leaf.subject.rfc4514_string()}"
        without = ssl.create_default_context(cafile=str(own_acme_server.root_file))
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            httpx.get(url, verify=without, timeout=30)
