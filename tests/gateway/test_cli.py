"""``ostiary gateway run`` as a process (config file, flags, SIGHUP, SIGTERM), bad input as one
line, the snippets' options, and ``ostiary ca crl-watch`` on a CA folder."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from ostiary.cli.main import app
from tests.gateway.conftest import CA, EchoUpstream, free_port, header, wait_for_port
from tests.server.conftest import PASSWORD

OSTIARY = [sys.executable, "-c", "from ostiary.cli.main import main; main()"]


def metric(port: int, name: str) -> str:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return "\n".join(line for line in text.splitlines() if line.startswith(name))


def test_gateway_run_from_a_config_file_with_flag_overrides_reloads_on_sighup(
    ca: CA, upstream: EchoUpstream, tmp_path: Path
) -> None:
    port, metrics_port = free_port(), free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'listen = "127.0.0.1:1"\nupstream = "http://127.0.0.1:{upstream.port}"\n'
        f'ca_roots = ["{ca.ca_file}"]\ncert = "{ca.server.cert_file}"\n'
        f'key = "{ca.server.key_file}"\nmetrics_listen = "127.0.0.1:{metrics_port}"\n'
        '[[routes]]\nprefix = "/"\nsan_patterns = ["email:*@example.com"]\n'
    )
    process = subprocess.Popen(
        [*OSTIARY, "gateway", "run", "--config", str(config), "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port)
        alice = ca.issue("alice", ("email:alice@example.com",))
        with ca.client(alice, port) as client:
            seen = client.get("/").json()
        assert header(seen, "x-client-subject") == ["CN=alice"]
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while 'result="ok"} 1' not in metric(metrics_port, "ostiary_gateway_reloads_total"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    log = stderr.decode()
    assert 'subject="CN=alice"' in log, "access log line names the client"
    assert '"GET / HTTP' not in log or "200" in log


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--upstream", "http://127.0.0.1:9"], "ca_roots", id="fail/missing-roots"),
        pytest.param(
            ["--upstream", "ftp://x:1", "--ca-root", "a", "--cert", "b", "--key", "c"],
            "upstream",
            id="fail/bad-upstream",
        ),
        pytest.param(
            ["--upstream", "tcp://127.0.0.1:1883", "--ca-root", "a", "--cert", "b", "--key", "c"],
            "HTTP mode needs an http:// or https:// upstream",
            id="fail/mode-mismatch",
        ),
        pytest.param(
            [
                "--upstream",
                "http://127.0.0.1:9",
                "--ca-root",
                "/nonexistent.pem",
                "--cert",
                "b",
                "--key",
                "c",
            ],
            "no CA root file at /nonexistent.pem",
            id="fail/missing-file",
        ),
        pytest.param(
            [
                "--upstream",
                "http://127.0.0.1:9",
                "--ca-root",
                "a",
                "--cert",
                "b",
                "--key",
                "c",
                "--metrics-listen",
                "0.0.0.0:9100",
            ],
            "loopback",
            id="fail/metrics-not-loopback",
        ),
        pytest.param(
            ["--config", "/nonexistent.toml"], "no gateway configuration", id="fail/missing-config"
        ),
        pytest.param(
            ["--upstream", "https://127.0.0.1:9", "--ca-root", "a", "--cert", "b", "--key", "c"],
            "an https:// upstream needs upstream_ca",
            id="fail/https-without-upstream-ca",
        ),
        pytest.param(
            [
                "--upstream",
                "http://127.0.0.1:9",
                "--ca-root",
                "a",
                "--cert",
                "b",
                "--key",
                "c",
                "--upstream-ca",
                "a",
            ],
            "upstream_ca is for an https:// upstream",
            id="fail/upstream-ca-without-https",
        ),
        pytest.param(
            [
                "--upstream",
                "https://127.0.0.1:9",
                "--ca-root",
                "a",
                "--cert",
                "b",
                "--key",
                "c",
                "--upstream-ca",
                "a",
                "--upstream-cert",
                "b",
            ],
            "upstream_cert and upstream_key go together",
            id="fail/upstream-cert-without-key",
        ),
        pytest.param(
            [
                "--upstream",
                "http://127.0.0.1:9",
                "--ca-root",
                "a",
                "--cert",
                "b",
                "--key",
                "c",
                "--listen",
                "127.0.0.1:0",
                "--workers",
                "2",
            ],
            "several workers share one fixed port",
            id="fail/workers-without-port",
        ),
        pytest.param(
            [
                "--upstream",
                "http://127.0.0.1:9",
                "--ca-root",
                "a",
                "--cert",
                "b",
                "--key",
                "c",
                "--workers",
                "0",
            ],
            "workers",
            id="fail/no-workers",
        ),
    ],
)
def test_gateway_run_bad_input_is_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["gateway", "run", *args])
    assert result.exit_code == 1, result.output
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_toml_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("listen = [unclosed")
    result = CliRunner().invoke(app, ["gateway", "run", "--config", str(config)])
    assert result.exit_code == 1
    assert "not valid TOML" in result.stderr


def test_snippet_options(ca: CA) -> None:
    files = [
        "--ca-root",
        str(ca.ca_file),
        "--cert",
        str(ca.server.cert_file),
        "--key",
        str(ca.server.key_file),
    ]
    runner = CliRunner()
    pool = runner.invoke(app, ["gateway", "config", "caddy", *files, "--trust-pool"])
    assert pool.exit_code == 0
    assert f"trust_pool file {ca.ca_file.resolve()}" in pool.stdout
    assert "trusted_ca_cert_file" not in pool.stdout
    assert "does not check revocation" in pool.stderr
    hidden = runner.invoke(app, ["gateway", "config", "nginx", *files, "--hide-ca-names"])
    assert "ssl_trusted_certificate" in hidden.stdout
    assert "ssl_client_certificate" not in hidden.stdout
    assert "revoked certificates are NOT refused" in hidden.stdout
    mosquitto = runner.invoke(app, ["gateway", "config", "mosquitto", *files])
    assert "require_certificate true" in mosquitto.stdout
    assert "use_identity_as_username true" in mosquitto.stdout
    missing = runner.invoke(
        app, ["gateway", "config", "nginx", "--ca-root", "/nope.pem", "--cert", "x", "--key", "y"]
    )
    assert missing.exit_code == 1
    assert "--ca-root /nope.pem: no such file" in missing.stderr


def test_crl_watch_on_a_ca_folder_runs_the_command_after_each_change(
    ca: CA, tmp_path: Path
) -> None:
    password_file = tmp_path / "password"
    password_file.write_bytes(PASSWORD + b"\n")
    folder = ca.authority.ca.paths.root
    settings = folder / "ostiary.toml"  # point the folder at the running server's database
    text = settings.read_text()
    if "database_url" not in text:
        url = ca.authority.ca.config.database_url
        settings.write_text(f'database_url = "{url}"\n' + text)
    crl_file = tmp_path / "crl.pem"
    marker = tmp_path / "reloads"
    process = subprocess.Popen(
        [
            *OSTIARY,
            "ca",
            "crl-watch",
            "--dir",
            str(folder),
            "--password-file",
            str(password_file),
            "--out",
            str(crl_file),
            "--root",
            "--interval",
            "0.3",
            "--exec",
            f"echo reload >> {marker}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while not marker.exists():
            assert time.monotonic() < deadline, "no CRL written"
            time.sleep(0.1)
        assert crl_file.read_bytes().count(b"-----BEGIN X509 CRL-----") == 2
        time.sleep(1.0)
        assert marker.read_text().count("reload") == 1, "no reload without a change"
        ca.revoke(ca.issue("dave", ("email:dave@example.com",)))
        deadline = time.monotonic() + 10
        while marker.read_text().count("reload") < 2:
            assert time.monotonic() < deadline, "the revocation did not reach the file"
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(10)


def test_crl_watch_refuses_a_crl_from_another_ca(ca: CA, tmp_path: Path) -> None:
    from tests.conftest import make_test_ca

    other = make_test_ca()
    foreign_roots = tmp_path / "other.pem"
    from cryptography.hazmat.primitives import serialization

    foreign_roots.write_bytes(other.root.public_bytes(serialization.Encoding.PEM))
    result = CliRunner().invoke(
        app,
        [
            "ca",
            "crl-watch",
            "--once",
            "--ca-url",
            ca.url,
            "--out",
            str(tmp_path / "c.pem"),
            "--ca-root",
            str(foreign_roots),
        ],
    )
    assert result.exit_code == 1
    assert "not signed by a trusted CA" in result.stderr
    assert not (tmp_path / "c.pem").exists()
    unreachable = CliRunner().invoke(
        app,
        [
            "ca",
            "crl-watch",
            "--once",
            "--ca-url",
            f"http://127.0.0.1:{free_port()}",
            "--out",
            str(tmp_path / "c.pem"),
        ],
    )
    assert unreachable.exit_code == 1
    assert "ConnectError" in unreachable.stderr
