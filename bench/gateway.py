"""Our gateway vs nginx, same certificates, same run, same loopback upstream.

    python bench/gateway.py [--seconds 5] [--out bench/gateway.json]

- Full and resumed mTLS handshakes per second: ``openssl s_time -new`` / ``-reuse`` (one
  client process, an independent tool) against each server.
- Proxied requests per second: keep-alive ``GET /`` over mTLS from two client processes, each
  with one persistent connection, through each server to the same upstream (an nginx
  ``return 200`` on plain HTTP, so the upstream is never the bottleneck).

Both servers get one worker (nginx ``worker_processes 1``; the gateway is one asyncio
process), revocation checking is off on both (it is a cached lookup on the gateway's hot path,
and would need a CA server in the run). Resumed handshakes are measured with TLS 1.3
(the default) and TLS 1.2. ``s_time -reuse`` sends no application data and closes before it
reads TLS 1.3 session tickets, so with TLS 1.3 it resumes almost never, against nginx as
against the gateway: the TLS 1.3 "resumed" figures are in effect full handshakes. A client
that sends a request first does resume on the gateway (checked with Python's
``session_reused``); the TLS 1.2 figures are real resumptions. Both servers allow TLS 1.2 and
1.3 (nginx 1.22 alone would stop at TLS 1.2, so the config sets ``ssl_protocols``).
The ratios ``gateway_handshake`` (full handshakes) and ``gateway_requests`` are
gateway / nginx; targets 0.8 and 0.5.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ostiary.core.ca import create_intermediate_certificate, create_root_certificate
from ostiary.core.issuance import Authorization, CAUrls, IssuingCA, issue_certificate
from ostiary.core.keys import KeyType, generate_private_key, signature_hash_for
from ostiary.core.names import parse_san, parse_subject
from ostiary.gateway.config import GatewayConfig
from ostiary.gateway.server import Gateway


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing on port {port}")


def pem(*items: object) -> bytes:
    out = b""
    for item in items:
        if isinstance(item, x509.Certificate):
            out += item.public_bytes(serialization.Encoding.PEM)
        else:
            out += item.private_bytes(  # type: ignore[attr-defined]
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
    return out


def make_pki(folder: Path) -> dict[str, Path]:
    now = datetime.now(UTC) - timedelta(hours=1)
    root_key = generate_private_key(KeyType.P256)
    root = create_root_certificate(parse_subject("CN=Bench Root"), root_key, now=now)
    inter_key = generate_private_key(KeyType.P256)
    inter = create_intermediate_certificate(
        parse_subject("CN=Bench Issuing"),
        inter_key.public_key(),
        root_certificate=root,
        root_key=root_key,
        now=now,
    )
    issuer = IssuingCA(
        certificate=inter,
        private_key=inter_key,
        chain=(inter, root),
        urls=CAUrls(crl=None, ocsp=None, ca_issuers=None),
    )
    files: dict[str, Path] = {}
    for name, profile, sans in (
        ("server", "server", ("dns:localhost", "ip:127.0.0.1")),
        ("client", "client", ("email:bench@example.com",)),
    ):
        key = generate_private_key(KeyType.P256)
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(parse_subject(name))
            .sign(key, signature_hash_for(key))
        )
        certificate = issue_certificate(
            csr,
            Authorization(
                subject=parse_subject(name),
                names=tuple(parse_san(s) for s in sans),
                profile=profile,
            ),
            issuer,
            now=datetime.now(UTC),
        )
        (folder / f"{name}.crt").write_bytes(pem(certificate, inter))
        (folder / f"{name}.key").write_bytes(pem(key))
        (folder / f"{name}.key").chmod(0o600)
        files[name] = folder / f"{name}.crt"
        files[f"{name}_key"] = folder / f"{name}.key"
    (folder / "ca.pem").write_bytes(pem(root, inter))
    (folder / "root.pem").write_bytes(pem(root))
    files["ca"] = folder / "ca.pem"
    files["root"] = folder / "root.pem"
    return files


def start_nginx(
    folder: Path, files: dict[str, Path], port: int, upstream: int
) -> subprocess.Popen[bytes]:
    temps = "\n".join(
        f"{k}_temp_path {folder}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (folder / "nginx.conf").write_text(f"""
daemon off; worker_processes 1; pid {folder}/nginx.pid; error_log {folder}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off; keepalive_requests 1000000; {temps}
  upstream app {{ server 127.0.0.1:{upstream}; keepalive 16; }}
  server {{ listen 127.0.0.1:{upstream}; location / {{ return 200 "ok"; }} }}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {files["server"]}; ssl_certificate_key {files["server_key"]};
    ssl_client_certificate {files["ca"]}; ssl_verify_client on;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:1m; ssl_session_tickets on;
    location / {{
      proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Client-Subject $ssl_client_s_dn;
    }}
  }}
}}
""")
    process = subprocess.Popen(
        [
            "nginx",
            "-p",
            f"{folder}/",
            "-c",
            str(folder / "nginx.conf"),
            "-e",
            str(folder / "error.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port)
    wait_for_port(upstream)
    return process


def s_time(port: int, files: dict[str, Path], mode: str, seconds: int, *extra: str) -> float:
    result = subprocess.run(
        [
            "openssl",
            "s_time",
            "-connect",
            f"127.0.0.1:{port}",
            mode,
            "-time",
            str(seconds),
            "-cert",
            str(files["client"]),
            "-key",
            str(files["client_key"]),
            "-CAfile",
            str(files["root"]),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=seconds * 3 + 30,
        check=False,
    )
    match = re.search(r"(\d+) connections in (\d+) real seconds", result.stdout)
    if match is None:
        raise RuntimeError(f"openssl s_time: {result.stdout[-400:]} {result.stderr[-400:]}")
    return int(match.group(1)) / max(int(match.group(2)), 1)


def _request_worker(
    port: int, files: dict[str, str], seconds: float, out: multiprocessing.Queue[int]
) -> None:
    context = ssl.create_default_context(cafile=files["root"])
    context.load_cert_chain(files["client"], files["client_key"])
    count = 0
    deadline = time.monotonic() + seconds
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    while time.monotonic() < deadline:  # reconnect if the server closes (keepalive_requests)
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            buffer = b""
            closed = False
            while not closed and time.monotonic() < deadline:
                tls.sendall(request)
                while True:
                    head_end = buffer.find(b"\r\n\r\n")
                    if head_end >= 0:
                        head = buffer[:head_end].lower()
                        found = re.search(rb"content-length: *(\d+)", head)
                        total = head_end + 4 + int(found.group(1) if found else 0)
                        if len(buffer) >= total:
                            buffer = buffer[total:]
                            count += 1
                            break
                    data = tls.recv(65536)
                    if not data:
                        closed = True
                        break
                    buffer += data
    out.put(count)


def requests_per_second(
    port: int, files: dict[str, Path], seconds: float, clients: int = 2
) -> float:
    queue: multiprocessing.Queue[int] = multiprocessing.Queue()
    plain = {k: str(v) for k, v in files.items()}
    workers = [
        multiprocessing.Process(target=_request_worker, args=(port, plain, seconds, queue))
        for _ in range(clients)
    ]
    for worker in workers:
        worker.start()
    total = sum(queue.get(timeout=seconds + 30) for _ in workers)
    for worker in workers:
        worker.join()
    return total / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    for tool in ("nginx", "openssl"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    with tempfile.TemporaryDirectory(prefix="ostiary-bench-") as directory:
        folder = Path(directory)
        files = make_pki(folder)
        nginx_port, upstream_port = free_port(), free_port()
        nginx = start_nginx(folder, files, nginx_port, upstream_port)
        gateway = Gateway(
            GatewayConfig(
                listen="127.0.0.1:0",
                upstream=f"http://127.0.0.1:{upstream_port}",
                ca_roots=(files["ca"],),
                cert=files["server"],
                key=files["server_key"],
                revocation="off",
                access_log=False,
            )
        )
        thread = threading.Thread(target=asyncio.run, args=(gateway.serve(),), daemon=True)
        thread.start()
        while not gateway.started:
            time.sleep(0.01)
        try:
            results: dict[str, float] = {}
            for name, port in (("nginx", nginx_port), ("gateway", gateway.port)):
                results[f"{name}_full_handshakes_per_s"] = s_time(port, files, "-new", args.seconds)
                results[f"{name}_resumed_handshakes_per_s"] = s_time(
                    port, files, "-reuse", args.seconds
                )
                results[f"{name}_resumed_tls12_handshakes_per_s"] = s_time(
                    port, files, "-reuse", args.seconds, "-tls1_2"
                )
                results[f"{name}_requests_per_s"] = requests_per_second(port, files, args.seconds)
        finally:
            gateway.request_stop()
            thread.join(10)
            nginx.terminate()
            nginx.wait(10)
    results = {k: round(v, 1) for k, v in results.items()}
    results["gateway_handshake"] = round(
        results["gateway_full_handshakes_per_s"] / results["nginx_full_handshakes_per_s"], 3
    )
    results["gateway_resumed_handshake"] = round(
        results["gateway_resumed_handshakes_per_s"] / results["nginx_resumed_handshakes_per_s"], 3
    )
    results["gateway_resumed_tls12_handshake"] = round(
        results["gateway_resumed_tls12_handshakes_per_s"]
        / results["nginx_resumed_tls12_handshakes_per_s"],
        3,
    )
    results["gateway_requests"] = round(
        results["gateway_requests_per_s"] / results["nginx_requests_per_s"], 3
    )
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
