"""Our gateway vs nginx, same certificates, same run, same upstream, same cores.

    python bench/gateway.py [--seconds 5] [--rounds 3] [--workers 1] [--out FILE]

Layout (2+ cores): the server under test (nginx with ``worker_processes W``, or
``ostiary gateway run --workers W`` on uvloop) is pinned with ``taskset`` to the last core;
the load generator and the upstream (a second nginx, ``return 200`` on plain HTTP) share the
other cores. The upstream's own rate, measured alone with the same load generator, is
reported (``upstream_alone_requests_per_s``) so one can see it is not the limit.

- Proxied requests per second: ``wrk`` (one thread, 16 keep-alive connections, ``GET /``).
  wrk has no option for a client certificate, so a 20-line ``LD_PRELOAD`` shim (compiled
  here with ``cc``) loads one into wrk's ``SSL_CTX`` when it is created; nothing else in wrk
  changes.
- Full handshakes per second: ``openssl s_time -new`` (a new TLS 1.3 connection with the
  client certificate, no request), two processes in parallel. The generator's ceiling is
  measured from its own CPU time (``handshake_client_ceiling_per_s``: handshakes per client
  CPU-second times the client cores); if it is not well above the measured rates, the client
  is the limit.
- Resumed handshakes per second: ``s_time -reuse`` with TLS 1.2 (session tickets), and with
  TLS 1.3 ``s_time -reuse -www /`` (a TLS 1.3 server sends its tickets after the handshake,
  which ``s_time`` only reads when it asks for a page: each resumed connection also carries
  one proxied ``GET``). ``*_reused_fraction`` is the share of connections s_time saw resumed.

TLS sessions: nginx as usually configured (``ssl_session_cache shared`` with tickets on, its
default) is the reference for the ratios; the gateway keeps sessions in its own cache and
sends no tickets (cheaper per full handshake: see ``ostiary.tls.server_context``). For the
like-for-like comparison of the TLS work, handshakes are also measured against nginx with
``ssl_session_tickets off`` (``nginx_no_tickets_*``, ratios ``*_vs_no_tickets``).

Revocation checking is off on both (on the gateway it is a cached lookup on the hot path,
and would need a CA server in the run); access logs are off on both. Both allow TLS 1.2 and
1.3. Each server's CPU per operation comes from ``/proc`` (utime + stime of its process
tree). The ratios ``gateway_handshake`` (full handshakes) and ``gateway_requests`` compare
the servers' CPU per operation (nginx's / ours: the rate ratio with both cores saturated),
``*_rate`` the rates as driven (see :func:`measure`); targets 0.8 and 0.5.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ostiary.core.ca import create_intermediate_certificate, create_root_certificate
from ostiary.core.issuance import Authorization, CAUrls, IssuingCA, issue_certificate
from ostiary.core.keys import KeyType, generate_private_key, signature_hash_for
from ostiary.core.names import parse_san, parse_subject

CORES = os.cpu_count() or 1
SERVER_CPUS = str(CORES - 1)
CLIENT_CPUS = ",".join(str(c) for c in range(CORES - 1)) or "0"
WRK_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_method_st SSL_METHOD;
int SSL_CTX_use_certificate_chain_file(SSL_CTX *, const char *);
int SSL_CTX_use_PrivateKey_file(SSL_CTX *, const char *, int);
SSL_CTX *SSL_CTX_new(const SSL_METHOD *method) {
    static SSL_CTX *(*real)(const SSL_METHOD *);
    if (!real) real = (SSL_CTX *(*)(const SSL_METHOD *))dlsym(RTLD_NEXT, "SSL_CTX_new");
    SSL_CTX *ctx = real(method);
    const char *cert = getenv("WRK_CLIENT_CERT"), *key = getenv("WRK_CLIENT_KEY");
    if (ctx && cert && key && (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1
                               || SSL_CTX_use_PrivateKey_file(ctx, key, 1) != 1))
        abort();
    return ctx;
}
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its children (nginx's workers, the gateway's)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
        todo.extend(int(c) for c in children)
    return total / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 20
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


def _nginx(folder: Path, name: str, body: str, cpus: str, workers: int) -> subprocess.Popen[bytes]:
    temps = "\n".join(
        f"{k}_temp_path {folder}/{name}-{k};"
        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = folder / f"{name}.conf"
    conf.write_text(f"""
daemon off; worker_processes {workers}; pid {folder}/{name}.pid;
error_log {folder}/{name}-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off; keepalive_requests 10000000; {temps}
  {body}
}}
""")
    return subprocess.Popen(
        ["taskset", "-c", cpus, "nginx", "-p", f"{folder}/", "-c", str(conf),
         "-e", str(folder / f"{name}-error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def start_upstream(folder: Path, port: int) -> subprocess.Popen[bytes]:
    body = f'server {{ listen 127.0.0.1:{port}; location / {{ return 200 "ok"; }} }}'
    process = _nginx(folder, "upstream", body, CLIENT_CPUS, 1)
    wait_for_port(port)
    return process


def start_nginx(
    folder: Path,
    files: dict[str, Path],
    port: int,
    upstream: int,
    workers: int,
    *,
    tickets: bool = True,
    name: str = "nginx",
) -> subprocess.Popen[bytes]:
    body = f"""
  upstream app {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {files["server"]}; ssl_certificate_key {files["server_key"]};
    ssl_client_certificate {files["ca"]}; ssl_verify_client on;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:1m; ssl_session_tickets {"on" if tickets else "off"};
    location / {{
      proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Client-Subject $ssl_client_s_dn;
      proxy_set_header X-Client-Serial $ssl_client_serial;
    }}
  }}"""
    process = _nginx(folder, name, body, SERVER_CPUS, workers)
    wait_for_port(port)
    return process


def start_gateway(
    folder: Path, files: dict[str, Path], port: int, upstream: int, workers: int
) -> subprocess.Popen[bytes]:
    config = folder / "gateway.toml"
    config.write_text(
        f'''listen = "127.0.0.1:{port}"
upstream = "http://127.0.0.1:{upstream}"
ca_roots = ["{files["ca"]}"]
cert = "{files["server"]}"
key = "{files["server_key"]}"
revocation = "off"
access_log = false
workers = {workers}
'''
    )
    ostiary = Path(sys.executable).parent / "ostiary"
    log = (folder / "gateway.log").open("wb")
    process = subprocess.Popen(
        ["taskset", "-c", SERVER_CPUS, str(ostiary), "gateway", "run", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def build_wrk_shim(folder: Path) -> Path:
    source = folder / "wrk_client_cert.c"
    source.write_text(WRK_SHIM)
    library = folder / "wrk_client_cert.so"
    subprocess.run(
        ["cc", "-shared", "-fPIC", "-O2", "-o", str(library), str(source), "-ldl"], check=True
    )
    return library


def wrk(url: str, seconds: float, files: dict[str, Path] | None, shim: Path | None) -> float:
    environment = dict(os.environ)
    if files is not None and shim is not None:
        environment |= {
            "LD_PRELOAD": str(shim),
            "WRK_CLIENT_CERT": str(files["client"]),
            "WRK_CLIENT_KEY": str(files["client_key"]),
        }
    result = subprocess.run(
        ["taskset", "-c", CLIENT_CPUS, "wrk", "-t1", "-c16", f"-d{max(int(seconds), 1)}s", url],
        capture_output=True,
        text=True,
        env=environment,
        timeout=seconds * 3 + 30,
        check=False,
    )
    match = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", result.stdout)
    if match is None or result.returncode != 0:
        raise RuntimeError(f"wrk: {result.stdout[-600:]} {result.stderr[-600:]}")
    if errors is not None:
        raise RuntimeError(f"wrk saw errors: {errors.group(0)}")
    return float(match.group(1))


def s_time(
    port: int, files: dict[str, Path], mode: str, seconds: float, *extra: str, clients: int = 2
) -> tuple[float, float, float]:
    """Handshakes per second over ``clients`` parallel ``openssl s_time`` processes, the
    client CPU seconds they used (for the generator's ceiling), and the share of connections
    that resumed a session (s_time prints ``r`` for each, ``*`` for a new one)."""
    argv = [
        "taskset", "-c", CLIENT_CPUS, "openssl", "s_time", "-connect", f"127.0.0.1:{port}",
        mode, "-time", str(max(int(seconds), 1)), "-cert", str(files["client"]),
        "-key", str(files["client_key"]), "-CAfile", str(files["root"]), *extra,
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    processes = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(clients)
    ]
    total = 0.0
    marks = {"r": 0, "*": 0}
    for process in processes:
        out, err = process.communicate(timeout=seconds * 3 + 30)
        match = re.search(r"(\d+) connections in (\d+) real seconds", out)
        if match is None:
            raise RuntimeError(f"openssl s_time: {out[-400:]} {err[-400:]}")
        total += int(match.group(1)) / max(int(match.group(2)), 1)
        for mark in marks:
            marks[mark] += out.count(mark)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return total, cpu, round(marks["r"] / max(marks["r"] + marks["*"], 1), 3)


def measure(seconds: float = 5, workers: int = 1, rounds: int = 3) -> dict[str, Any]:
    """Run the whole comparison; returns rates, ratios and the machine's load.

    Both servers run side by side (idle while the other is measured); each measurement is
    taken ``rounds`` times, nginx and the gateway back to back, so that a burst of load from
    elsewhere on a shared machine hits both alike. Rates and CPU costs are medians.

    Two ratios per measurement, each the median of its per-round values (``*_rounds``):
    ``gateway_X_rate`` is gateway rate / nginx rate as driven; ``gateway_X`` (the one in
    ``bench/run.py``'s ratios) is nginx's server CPU per operation / the gateway's, i.e. the
    rate ratio both would reach with their core saturated. On a 2-core machine the load
    generator and the upstream share one core and cannot saturate the server's (each server
    uses well under its core), so the rate ratio mostly measures the client side; the CPU
    ratio measures the servers.
    """
    for tool in ("nginx", "openssl", "wrk", "cc", "taskset"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed")
    results: dict[str, Any] = {
        "seconds": seconds,
        "rounds": rounds,
        "workers": workers,
        "server_cpus": SERVER_CPUS,
        "client_cpus": CLIENT_CPUS,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    samples: dict[str, list[float]] = {}

    def sample(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    def timed(name: str, metric: str, run: Callable[[], float]) -> float:
        """``run()`` (a rate per second), recording the server's CPU µs per operation too:
        less sensitive than rates to load from elsewhere on a shared machine."""
        before = cpu_seconds(servers[name].pid)
        rate = run()
        used = cpu_seconds(servers[name].pid) - before
        sample(f"{name}_{metric}", rate)
        sample(f"{name}_{metric}_cpu_us_per_op", used / max(rate * seconds, 1) * 1e6)
        return rate

    with tempfile.TemporaryDirectory(prefix="ostiary-bench-gw-") as directory:
        folder = Path(directory)
        files = make_pki(folder)
        shim = build_wrk_shim(folder)
        upstream_port = free_port()
        servers: dict[str, subprocess.Popen[bytes]] = {}
        ports = {"nginx": free_port(), "gateway": free_port()}
        # Handshakes are also measured against nginx without tickets, the gateway's own
        # session setting: the like-for-like comparison of the TLS work.
        handshake_ports = {**ports, "nginx_no_tickets": free_port()}
        try:
            servers["upstream"] = start_upstream(folder, upstream_port)
            servers["nginx"] = start_nginx(folder, files, ports["nginx"], upstream_port, workers)
            servers["nginx_no_tickets"] = start_nginx(
                folder,
                files,
                handshake_ports["nginx_no_tickets"],
                upstream_port,
                workers,
                tickets=False,
                name="nginx-no-tickets",
            )
            servers["gateway"] = start_gateway(
                folder, files, ports["gateway"], upstream_port, workers
            )
            for _ in range(rounds):
                sample(
                    "upstream_alone_requests_per_s",
                    wrk(f"http://127.0.0.1:{upstream_port}/", seconds, None, None),
                )
                for name, port in ports.items():
                    url = f"https://127.0.0.1:{port}/"
                    timed(name, "requests_per_s", lambda u=url: wrk(u, seconds, files, shim))
                for name, port in handshake_ports.items():
                    client: list[float] = []

                    def full(p: int = port, out: list[float] = client) -> float:
                        rate, cpu, _ = s_time(p, files, "-new", seconds)
                        out.append(rate * seconds / cpu * len(CLIENT_CPUS.split(",")))
                        return rate

                    timed(name, "full_handshakes_per_s", full)
                    sample("handshake_client_ceiling_per_s", client[0])
                for version, extra in (("tls12", ("-tls1_2",)), ("tls13", ("-www", "/"))):
                    for name, port in handshake_ports.items():
                        reused: list[float] = []

                        def resumed(
                            p: int = port, e: tuple[str, ...] = extra, out: list[float] = reused
                        ) -> float:
                            rate, _, fraction = s_time(p, files, "-reuse", seconds, *e)
                            out.append(fraction)
                            return rate

                        timed(name, f"resumed_{version}_handshakes_per_s", resumed)
                        sample(f"{name}_resumed_{version}_reused_fraction", reused[0])
        finally:
            for process in servers.values():
                stop(process)
    results["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    for key, values in samples.items():
        results[key] = round(statistics.median(values), 3 if "fraction" in key else 1)
    results["handshake_client_ceiling_per_s"] = round(
        min(samples["handshake_client_ceiling_per_s"]), 1
    )
    for ratio, metric, peer in (
        ("gateway_handshake", "full_handshakes_per_s", "nginx"),
        ("gateway_resumed_tls12_handshake", "resumed_tls12_handshakes_per_s", "nginx"),
        ("gateway_resumed_tls13_handshake", "resumed_tls13_handshakes_per_s", "nginx"),
        ("gateway_requests", "requests_per_s", "nginx"),
        ("gateway_handshake_vs_no_tickets", "full_handshakes_per_s", "nginx_no_tickets"),
        (
            "gateway_resumed_tls12_handshake_vs_no_tickets",
            "resumed_tls12_handshakes_per_s",
            "nginx_no_tickets",
        ),
        (
            "gateway_resumed_tls13_handshake_vs_no_tickets",
            "resumed_tls13_handshakes_per_s",
            "nginx_no_tickets",
        ),
    ):
        pairs = zip(samples[f"gateway_{metric}"], samples[f"{peer}_{metric}"], strict=True)
        rates = [round(g / n, 3) for g, n in pairs]
        costs = zip(
            samples[f"gateway_{metric}_cpu_us_per_op"],
            samples[f"{peer}_{metric}_cpu_us_per_op"],
            strict=True,
        )
        capacity = [round(n / g, 3) for g, n in costs]
        results[f"{ratio}_rate_rounds"] = rates
        results[f"{ratio}_rate"] = round(statistics.median(rates), 3)
        results[f"{ratio}_rounds"] = capacity
        results[ratio] = round(statistics.median(capacity), 3)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    try:
        results = measure(args.seconds, args.workers, args.rounds)
    except RuntimeError as exc:
        sys.exit(str(exc))
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
