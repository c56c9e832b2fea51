"""Full mTLS handshakes per second with N revoked certificates: our gateway vs nginx.

    python bench/revoked.py [--revoked 0,10000,100000] [--seconds 5] [--rounds 3]

nginx reads a CRL file (``ssl_crl``: the issuing CA's CRL with N entries, and the root's,
empty, since nginx checks every level) and scans it on every handshake. Our gateway follows
the issuing CA's revocation feed and keeps the revoked serials in a set: one hash probe per
handshake. The feed here is a stand-in for the CA's ``/revocations`` (in this process): it
answers a new subscriber with a snapshot (the same CRL, signed by the same intermediate, in
the format :mod:`ostiary.authority.revocation_feed` emits) and then holds each request
until its wait is over. Same certificates, same run, same cores as ``bench/gateway.py``
(``openssl s_time -new``, two processes; the server pinned to the last core). The gateway's
memory per revoked serial is its resident size with N entries less with none, over N.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).parent))
import gateway as gw  # bench/gateway.py
from ostiary.core.ca import create_intermediate_certificate, create_root_certificate
from ostiary.core.crl import RevokedEntry, build_crl
from ostiary.core.issuance import Authorization, CAUrls, IssuingCA, issue_certificate
from ostiary.core.jws import b64url, sign_message
from ostiary.core.keys import KeyType, generate_private_key, signature_hash_for
from ostiary.core.names import parse_san, parse_subject


def make_pki(folder: Path) -> dict[str, Any]:
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
    files: dict[str, Any] = {"root_key": root_key, "inter_key": inter_key}
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
        (folder / f"{name}.crt").write_bytes(gw.pem(certificate, inter))
        (folder / f"{name}.key").write_bytes(gw.pem(key))
        (folder / f"{name}.key").chmod(0o600)
        files[name] = folder / f"{name}.crt"
        files[f"{name}_key"] = folder / f"{name}.key"
        files[f"{name}_serial"] = certificate.serial_number
    (folder / "ca.pem").write_bytes(gw.pem(root, inter))
    (folder / "root.pem").write_bytes(gw.pem(root))
    files.update(ca=folder / "ca.pem", root=folder / "root.pem", root_cert=root, inter=inter)
    return files


def crls(pki: dict[str, Any], count: int) -> tuple[bytes, bytes]:
    """The issuing CA's CRL with ``count`` random serials (DER), and both CRLs as PEM."""
    now = datetime.now(UTC).replace(microsecond=0)
    entries = sorted(
        {secrets.randbits(127) | (1 << 126) for _ in range(count)} - {pki["client_serial"]}
    )
    revoked = [RevokedEntry(s, now, None) for s in entries]
    later = now + timedelta(days=1)
    issuing = build_crl(
        pki["inter"], pki["inter_key"], revoked, crl_number=1, this_update=now, next_update=later
    )
    root = build_crl(
        pki["root_cert"], pki["root_key"], [], crl_number=1, this_update=now, next_update=later
    )
    pems = b"".join(
        x509.load_der_x509_crl(d).public_bytes(serialization.Encoding.PEM) for d in (issuing, root)
    )
    return issuing, pems


class Feed(ThreadingHTTPServer):
    """The CA's /revocations and /crl for one issuing CA, as the bench needs them."""

    daemon_threads = True

    def __init__(self, pki: dict[str, Any], crl_der: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _FeedHandler)
        self.pki = pki
        self.crl_der = crl_der
        key = pki["inter_key"]
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        ski = pki["inter"].extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        self.kid = ski.value.digest.hex()
        header = {"alg": "ES256", "kid": self.kid, "typ": "ostiary-revocations+jws"}
        self.header = b64url(json.dumps(header, separators=(",", ":")).encode())

    def answer(self, after: int, nonce: str | None) -> bytes:
        payload: dict[str, Any] = {"iss": self.kid, "after": after, "head": 1, "revoked": []}
        if nonce is not None:
            payload["nonce"] = nonce
        if after == 0:
            payload["snapshot"] = "/crl"
        body = b64url(json.dumps(payload, separators=(",", ":")).encode())
        signing_input = f"{self.header}.{body}".encode()
        signature = sign_message(self.pki["inter_key"], "ES256", signing_input)
        return signing_input + b"." + b64url(signature).encode()


class _FeedHandler(BaseHTTPRequestHandler):
    server: Feed

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/crl":
            body, kind = self.server.crl_der, "application/pkix-crl"
        else:
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            after = int(query.get("after", "0"))
            if after:
                time.sleep(min(float(query.get("wait", "0")), 20.0))
            body, kind = self.server.answer(after, query.get("nonce")), "application/jose"
        try:
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway stopped while its request was held

    def log_message(self, format: str, *args: Any) -> None:
        pass


def nginx_server(pki: dict[str, Any], port: int, upstream: int, crl: Path) -> str:
    """nginx's ``upstream`` and ``server`` blocks: mTLS with ``ssl_crl``, proxying."""
    return f"""
  upstream app {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {pki["server"]}; ssl_certificate_key {pki["server_key"]};
    ssl_client_certificate {pki["ca"]}; ssl_verify_client on; ssl_crl {crl};
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:1m;
    location / {{ proxy_pass http://app; }}
  }}"""


def start_nginx(folder: Path, pki: dict[str, Any], port: int, upstream: int, crl: Path) -> Any:
    body = nginx_server(pki, port, upstream, crl)
    process = gw._nginx(folder, f"nginx-crl-{port}", body, gw.SERVER_CPUS, 1)
    gw.wait_for_port(port)
    return process


def gateway_command(
    folder: Path, pki: dict[str, Any], port: int, upstream: int, feed_url: str
) -> list[str]:
    """Write the gateway's configuration; the command line that runs it."""
    config = folder / f"gateway-{port}.toml"
    config.write_text(
        f'''listen = "127.0.0.1:{port}"
upstream = "http://127.0.0.1:{upstream}"
ca_roots = ["{pki["ca"]}"]
cert = "{pki["server"]}"
key = "{pki["server_key"]}"
revocation = "auto"
revocation_feed = "{feed_url}"
access_log = false
'''
    )
    ostiary = Path(sys.executable).parent / "ostiary"
    return [str(ostiary), "gateway", "run", "--config", str(config)]


def start_gateway(
    folder: Path, pki: dict[str, Any], port: int, upstream: int, feed_url: str
) -> subprocess.Popen[bytes]:
    log = (folder / f"gateway-{port}.log").open("wb")
    process = subprocess.Popen(
        ["taskset", "-c", gw.SERVER_CPUS, *gateway_command(folder, pki, port, upstream, feed_url)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    gw.wait_for_port(port)
    return process


def admitted(port: int, pki: dict[str, Any]) -> bool:
    """One handshake and ``GET /``: True if answered 200."""
    import ssl

    context = ssl.create_default_context(cafile=str(pki["root"]))
    context.load_cert_chain(pki["client"], pki["client_key"])
    try:
        with (
            __import__("socket").create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            return tls.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def measure(sizes: list[int], seconds: float = 5, rounds: int = 3) -> dict[str, Any]:
    results: dict[str, Any] = {"seconds": seconds, "rounds": rounds, "sizes": sizes}
    with tempfile.TemporaryDirectory(prefix="ostiary-bench-revoked-") as directory:
        folder = Path(directory)
        pki = make_pki(folder)
        upstream_port = gw.free_port()
        upstream = gw.start_upstream(folder, upstream_port)
        baseline_rss: int | None = None
        try:
            for size in sizes:
                crl_der, crl_pem = crls(pki, size)
                crl_file = folder / f"crl-{size}.pem"
                crl_file.write_bytes(crl_pem)
                feed = Feed(pki, crl_der)
                threading.Thread(target=feed.serve_forever, daemon=True).start()
                feed_url = f"http://127.0.0.1:{feed.server_address[1]}/revocations"
                ports = {"nginx": gw.free_port(), "gateway": gw.free_port()}
                servers = {
                    "nginx": start_nginx(folder, pki, ports["nginx"], upstream_port, crl_file),
                    "gateway": start_gateway(
                        folder, pki, ports["gateway"], upstream_port, feed_url
                    ),
                }
                try:
                    # The first client starts the gateway's subscription; until the snapshot
                    # is loaded it asks OCSP/CRL, which these certificates do not name.
                    deadline = time.monotonic() + 60
                    while not admitted(ports["gateway"], pki):
                        if time.monotonic() > deadline:
                            raise RuntimeError("the gateway never admitted the client")
                        time.sleep(0.2)
                    if not admitted(ports["nginx"], pki):
                        raise RuntimeError("nginx does not admit the client")
                    rss = rss_kib(servers["gateway"].pid)
                    if size == 0:
                        baseline_rss = rss
                    samples: dict[str, list[float]] = {"nginx": [], "gateway": []}
                    cpu: dict[str, list[float]] = {"nginx": [], "gateway": []}
                    for _ in range(rounds):
                        for name, port in ports.items():
                            before = gw.cpu_seconds(servers[name].pid)
                            rate, _, _ = gw.s_time(port, pki, "-new", seconds)
                            used = gw.cpu_seconds(servers[name].pid) - before
                            samples[name].append(rate)
                            cpu[name].append(used / max(rate * seconds, 1) * 1e6)
                    row: dict[str, Any] = {
                        f"{n}_full_handshakes_per_s": round(statistics.median(v), 1)
                        for n, v in samples.items()
                    }
                    row |= {
                        f"{n}_cpu_us_per_handshake": round(statistics.median(v), 1)
                        for n, v in cpu.items()
                    }
                    rates = [
                        g / n for g, n in zip(samples["gateway"], samples["nginx"], strict=True)
                    ]
                    costs = [n / g for g, n in zip(cpu["gateway"], cpu["nginx"], strict=True)]
                    row["gateway_vs_nginx_rate"] = round(statistics.median(rates), 2)
                    row["gateway_vs_nginx_cpu"] = round(statistics.median(costs), 2)
                    row["gateway_rss_mib"] = round(rss / 1024, 1)
                    if size and baseline_rss is not None:
                        row["gateway_bytes_per_revoked_serial"] = round(
                            (rss - baseline_rss) * 1024 / size, 1
                        )
                    results[str(size)] = row
                finally:
                    for process in servers.values():
                        gw.stop(process)
                    feed.shutdown()
                    feed.server_close()
        finally:
            gw.stop(upstream)
    results["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--revoked", default="0,10000,100000")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.revoked.split(",")]
    print(json.dumps(measure(sizes, args.seconds, args.rounds), indent=2))


if __name__ == "__main__":
    main()
