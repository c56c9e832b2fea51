"""From ``ostiary ca revoke`` returning to the first refused handshake, at three doors.

    python bench/revocation.py [--count 50] [--polling 3]

One CA server (``ostiary ca serve``, SQLite), and behind it, each with its own client
certificates from that CA:

- ``gateway``: ``ostiary gateway run`` with its defaults (OCSP status reused 30 s, the
  revocation feed followed);
- ``nginx``: ``ssl_crl`` kept by ``ostiary ca crl-watch --ca-url ... --exec 'nginx -s
  reload'`` with its default 60 s interval (the feed wakes it);
- ``mosquitto``: ``crlfile`` kept the same way, ``--exec 'kill -HUP <pid>'``.

And the same three the old way (``*_polling``): the gateway with ``revocation_feed = "off"``,
crl-watch with ``--no-feed`` (every 60 s). For each revocation a client certificate is first
admitted by every door (so the gateway holds a good OCSP status for it), then revoked with the
``ostiary ca revoke`` command (a process of its own, as an operator runs it); from the moment
it returns, each door is probed with full handshakes every 20 ms until it refuses. p50/p99
over ``--count`` revocations (``--polling`` for the old way: each takes up to a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).parent))
import run as bench  # bench/run.py

import gateway as gw  # bench/gateway.py
from ostiary.authority.authority import Authority
from ostiary.core.issuance import Authorization
from ostiary.core.keys import signature_hash_for
from ostiary.core.lifetime import Lifetime
from ostiary.core.names import parse_san, parse_subject

OSTIARY = str(Path(sys.executable).with_name("ostiary"))
#: Give up on a door after this long (seconds): the polling ones take up to a minute.
PATIENCE = 75.0
_MQTT_CONNECT = bytes([0x10, 18, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, 6]) + b"bench1"


def issue(authority: Authority, folder: Path, name: str, profile: str = "client") -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    sans = ("dns:localhost", "ip:127.0.0.1") if profile == "server" else (f"email:{name}@x.test",)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(parse_subject(name))
        .sign(key, signature_hash_for(key))
    )
    certificate = authority.issue(
        csr,
        Authorization(
            subject=parse_subject(name),
            names=tuple(parse_san(s) for s in sans),
            profile=profile,
            lifetime=Lifetime(timedelta(minutes=5), timedelta(hours=8), timedelta(days=30)),
        ),
        actor="bench",
    )
    (folder / f"{name}.crt").write_bytes(gw.pem(certificate, authority.issuer.certificate))
    (folder / f"{name}.key").write_bytes(gw.pem(key))
    (folder / f"{name}.key").chmod(0o600)
    return folder / f"{name}.crt"


def context_for(folder: Path, name: str, root: Path, tls12: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(root))
    context.load_cert_chain(folder / f"{name}.crt", folder / f"{name}.key")
    if tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


def https_admitted(port: int, context: ssl.SSLContext) -> bool:
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            return tls.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def mqtt_admitted(port: int, context: ssl.SSLContext) -> bool:
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(_MQTT_CONNECT)
            return tls.recv(4) == b"\x20\x02\x00\x00"
    except OSError:
        return False


def crl_watch(
    ca: Any, out: Path, ca_file: Path, command: str, *options: str
) -> subprocess.Popen[bytes]:
    args = ["ca", "crl-watch", "--ca-url", ca.http, "--root", "--out", str(out)]
    args += ["--ca-root", str(ca_file), "--exec", command, *options]
    return subprocess.Popen([OSTIARY, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def write_crl_once(ca: Any, out: Path, ca_file: Path) -> None:
    args = ["ca", "crl-watch", "--once", "--ca-url", ca.http, "--root", "--out", str(out)]
    subprocess.run([OSTIARY, *args, "--ca-root", str(ca_file)], check=True)


def start_nginx(folder: Path, name: str, port: int, upstream: int, crl: Path) -> tuple[Any, str]:
    body = f"""
  upstream app {{ server 127.0.0.1:{upstream}; }}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {folder}/server.crt; ssl_certificate_key {folder}/server.key;
    ssl_client_certificate {folder}/ca.pem; ssl_verify_client on; ssl_crl {crl};
    location / {{ proxy_pass http://app; }}
  }}"""
    process = gw._nginx(folder, name, body, gw.SERVER_CPUS, 1)
    gw.wait_for_port(port)
    conf = folder / f"{name}.conf"
    reload = f"nginx -p {folder}/ -c {conf} -e {folder}/{name}-error.log -s reload"
    return process, reload


def start_mosquitto(folder: Path, name: str, port: int, crl: Path) -> subprocess.Popen[bytes]:
    conf = folder / f"{name}.conf"
    conf.write_text(
        ("user root\n" if os.geteuid() == 0 else "")
        + f"persistence false\nlog_dest file {folder}/{name}.log\nper_listener_settings true\n"
        f"listener {port} 127.0.0.1\ncafile {folder}/ca.pem\ncertfile {folder}/server.crt\n"
        f"keyfile {folder}/server.key\ntls_version tlsv1.2\nrequire_certificate true\n"
        f"use_identity_as_username true\nallow_anonymous false\ncrlfile {crl}\n"
    )
    process = subprocess.Popen(
        ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    gw.wait_for_port(port)
    return process


def start_gateway(folder: Path, name: str, port: int, upstream: int, feed: bool) -> Any:
    config = folder / f"{name}.toml"
    config.write_text(
        f'listen = "127.0.0.1:{port}"\nupstream = "http://127.0.0.1:{upstream}"\n'
        f'ca_roots = ["{folder}/ca.pem"]\ncert = "{folder}/server.crt"\n'
        f'key = "{folder}/server.key"\naccess_log = false\n'
        + ("" if feed else 'revocation_feed = "off"\n')
    )
    process = subprocess.Popen(
        [OSTIARY, "gateway", "run", "--config", str(config)],
        stdout=(folder / f"{name}.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    gw.wait_for_port(port)
    return process


def revocation_time(ca: Any, serial: int) -> float:
    """The revocation time the CA recorded (wall clock, epoch seconds)."""
    from sqlalchemy import select

    from ostiary.store import CertificateRecord

    with ca.store.transaction(read_only=True) as session:
        at = session.scalar(
            select(CertificateRecord.revoked_at).where(CertificateRecord.serial == f"{serial:x}")
        )
    return at.timestamp() if at is not None else time.time()


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 3)


def measure(count: int = 50, polling: int = 3) -> dict[str, Any]:
    results: dict[str, Any] = {"count": count, "polling": polling}
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="ostiary-bench-revocation-") as temp:
        work = Path(temp)
        with bench.ostiary_server(
            work, cpus=",".join(str(c) for c in range(os.cpu_count() or 1))
        ) as ca:
            from ostiary.cli.unlock import unlock_ca

            with unlock_ca(ca.folder, ca.password_file) as unlocked:
                authority = unlocked.authority
                folder = work / "doors"
                folder.mkdir()
                root = ca.root_pem
                material = authority.ca
                (folder / "ca.pem").write_bytes(gw.pem(material.root, material.intermediate))
                issue(authority, folder, "server", "server")
                total = count + polling
                for i in range(total):
                    issue(authority, folder, f"c{i}")
            serials = [
                x509.load_pem_x509_certificate((folder / f"c{i}.crt").read_bytes()).serial_number
                for i in range(total)
            ]
            upstream_port = gw.free_port()
            processes.append(gw.start_upstream(folder, upstream_port))
            doors: dict[str, tuple[int, Callable[[int, ssl.SSLContext], bool], bool]] = {}
            try:
                for mode in ("feed", "polling"):
                    suffix = "" if mode == "feed" else "_polling"
                    feed_options = ("--interval", "60") + (() if mode == "feed" else ("--no-feed",))
                    port = gw.free_port()
                    processes.append(
                        start_gateway(
                            folder, f"gateway{suffix}", port, upstream_port, mode == "feed"
                        )
                    )
                    doors[f"gateway{suffix}"] = (port, https_admitted, False)
                    crl = folder / f"nginx{suffix}.crl.pem"
                    write_crl_once(ca, crl, folder / "ca.pem")
                    port = gw.free_port()
                    nginx, reload = start_nginx(folder, f"nginx{suffix}", port, upstream_port, crl)
                    processes.append(nginx)
                    processes.append(crl_watch(ca, crl, folder / "ca.pem", reload, *feed_options))
                    doors[f"nginx{suffix}"] = (port, https_admitted, False)
                    crl = folder / f"mosquitto{suffix}.crl.pem"
                    write_crl_once(ca, crl, folder / "ca.pem")
                    port = gw.free_port()
                    mosquitto = start_mosquitto(folder, f"mosquitto{suffix}", port, crl)
                    processes.append(mosquitto)
                    processes.append(
                        crl_watch(
                            ca, crl, folder / "ca.pem", f"kill -HUP {mosquitto.pid}", *feed_options
                        )
                    )
                    doors[f"mosquitto{suffix}"] = (port, mqtt_admitted, True)
                time.sleep(3)  # the crl-watch processes start and subscribe
                latencies: dict[str, list[float]] = {name: [] for name in doors}
                command_s: list[float] = []
                #: From the revocation's recorded time (the command's clock reading just
                #: before its transaction) to the refusal: includes the commit itself.
                from_record: dict[str, list[float]] = {name: [] for name in doors}
                for i in range(total):
                    names = [n for n in doors if n.endswith("_polling") == (i >= count)]
                    contexts = {
                        n: context_for(folder, f"c{i}", root, tls12=doors[n][2]) for n in names
                    }
                    for n in names:
                        port, admitted, _ = doors[n]
                        deadline = time.monotonic() + 30
                        while not admitted(port, contexts[n]):  # first admitted (OCSP cached)
                            if time.monotonic() > deadline:
                                raise RuntimeError(f"{n} does not admit a good client")
                            time.sleep(0.2)
                    started = time.monotonic()
                    bench.cli(
                        "ca", "revoke", f"{serials[i]:x}", "--reason", "keyCompromise",
                        "--dir", str(ca.folder), "--password-file", str(ca.password_file),
                        cwd=work,
                    )  # fmt: skip
                    returned = time.monotonic()
                    command_s.append(returned - started)

                    revoked_at = revocation_time(ca, serials[i])

                    def probe(
                        name: str,
                        since: float = returned,
                        tls: dict[str, Any] = contexts,
                        recorded: float = revoked_at,
                    ) -> None:
                        port, admitted, _ = doors[name]
                        while admitted(port, tls[name]):
                            if time.monotonic() - since > PATIENCE:
                                return
                            time.sleep(0.02)
                        latencies[name].append(time.monotonic() - since)
                        from_record[name].append(time.time() - recorded)

                    threads = [threading.Thread(target=probe, args=(n,)) for n in names]
                    for thread in threads:
                        thread.start()
                    for thread in threads:
                        thread.join()
            finally:
                for process in reversed(processes):
                    gw.stop(process)
            for name, values in latencies.items():
                expected = polling if name.endswith("_polling") else count
                recorded = from_record[name]
                results[name] = {
                    "revocations": len(values),
                    "missed": expected - len(values),
                    "p50_s": round(statistics.median(values), 3) if values else None,
                    "p99_s": percentile(values, 0.99),
                    "max_s": round(max(values), 3) if values else None,
                    "from_revoked_at_p50_s": (
                        round(statistics.median(recorded), 3) if recorded else None
                    ),
                    "from_revoked_at_p99_s": percentile(recorded, 0.99),
                }
    # How long 'ostiary ca revoke' itself ran (start, unlock, commit, exit): the revocation
    # commits before it returns, so this bounds how much earlier the clock could start.
    results["revoke_command_p50_s"] = round(statistics.median(command_s), 3) if command_s else None
    results["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--polling", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(measure(args.count, args.polling), indent=2))


if __name__ == "__main__":
    main()
