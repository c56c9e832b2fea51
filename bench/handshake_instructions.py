"""Instructions per full mTLS handshake of our gateway (and nginx), counted by callgrind.

    python bench/handshake_instructions.py [--revoked 100000] [--seconds 40] [--nginx]
                                           [--requests] [--source DIR] [--json FILE]

The load-independent twin of ``bench/revoked.py``: the same certificates, the same feed
stand-in (its snapshot a CRL of ``--revoked`` random serials) and the same client
(``openssl s_time -new``, two processes), but the server runs under
``valgrind --tool=callgrind``. Once the gateway admits the client (the feed's snapshot is
loaded) and a warm-up has run, the counters are zeroed, s_time runs for ``--seconds``, and
callgrind dumps: every instruction the server ran in that time, over the connections s_time
completed. ``--nginx`` does the same for nginx (``master_process off``, one process) with
``ssl_crl`` of the same size. ``--source DIR`` runs the Ostiary package found in ``DIR``
(for A/B against another checkout, as ``bench/instructions.py``). ``--requests`` counts
proxied requests instead of handshakes: ``wrk`` (16 keep-alive connections, the client
certificate loaded by ``bench/gateway.py``'s shim) for ``--seconds``, instructions per
request (the handshakes of its 16 connections are in the warm-up, before the zeroing).

Instructions are not time (OpenSSL's big-number code retires more work per instruction
than the interpreter does), so the ratio of two servers' counts is a hint, not the CPU
ratio; the count is for A/B of our own changes, where it moves by well under 1 % between
runs of the same code, while CPU time on this shared machine moves by tens of per cent.
Under valgrind a handshake takes some 50 times longer. Needs Debian ``valgrind`` and nginx.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import revoked  # bench/revoked.py
from instructions import _control, _instructions, _wait_for_dump, use_source

import gateway as gw  # bench/gateway.py

PATIENCE = 600  # seconds for a server under valgrind to start and take its snapshot


def _callgrind(out: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p"]


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited ({process.returncode}) before listening")
        try:
            gw.wait_for_port(port)
            return
        except RuntimeError:
            continue
    raise SystemExit(f"nothing listened on {port} within {PATIENCE} s")


def _gateway(folder: Path, pki: dict[str, Any], port: int, upstream: int, feed_url: str,
             out: Path) -> subprocess.Popen[bytes]:  # fmt: skip
    return subprocess.Popen(
        [*_callgrind(out), sys.executable,
         *revoked.gateway_command(folder, pki, port, upstream, feed_url)],
        stdout=(folder / "gateway.log").open("wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip


def _nginx(folder: Path, pki: dict[str, Any], port: int, upstream: int, crl: Path,
           out: Path) -> subprocess.Popen[bytes]:  # fmt: skip
    temps = "\n".join(f"{k}_temp_path {folder}/ng-{k};" for k in ("client_body", "proxy"))
    conf = folder / "nginx.conf"
    conf.write_text(f"""
daemon off; master_process off; pid {folder}/nginx.pid; error_log {folder}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off; {temps}
  {revoked.nginx_server(pki, port, upstream, crl)}
}}
""")
    return subprocess.Popen(
        [*_callgrind(out), "nginx", "-p", f"{folder}/", "-c", str(conf),
         "-e", str(folder / "nginx-error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _handshakes(port: int, pki: dict[str, Any], seconds: float) -> int:
    """Full handshakes completed by two ``openssl s_time -new`` processes in ``seconds``."""
    argv = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time",
            str(int(seconds)), "-cert", str(pki["client"]), "-key", str(pki["client_key"]),
            "-CAfile", str(pki["root"])]  # fmt: skip
    clients = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    total = 0
    for client in clients:
        out, _ = client.communicate(timeout=seconds * 3 + 60)
        match = re.search(r"(\d+) connections in", out)
        if match is None:
            raise SystemExit(f"openssl s_time: {out[-400:]}")
        total += int(match.group(1))
    return total


def _requests(port: int, pki: dict[str, Any], seconds: float, shim: Path) -> int:
    """Proxied requests completed by ``wrk`` (16 keep-alive connections) in ``seconds``."""
    environment = {
        **os.environ,
        "LD_PRELOAD": str(shim),
        "WRK_CLIENT_CERT": str(pki["client"]),
        "WRK_CLIENT_KEY": str(pki["client_key"]),
    }
    argv = ["wrk", "-t1", "-c16", f"-d{int(seconds)}s", "--timeout", "30s",
            f"https://127.0.0.1:{port}/"]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, env=environment, check=False)
    match = re.search(r"(\d+) requests in", out.stdout)
    if match is None or out.returncode != 0 or "Non-2xx" in out.stdout:
        raise SystemExit(f"wrk: {out.stdout[-400:]} {out.stderr[-400:]}")
    return int(match.group(1))


def count(
    server: str, size: int, seconds: float, keep: Path | None = None, *, requests: bool = False
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ostiary-bench-hsi-") as directory:
        folder = Path(directory)
        out = folder / "callgrind.out"
        pki = revoked.make_pki(folder)
        upstream_port, port = gw.free_port(), gw.free_port()
        upstream = gw.start_upstream(folder, upstream_port)
        crl_der, crl_pem = revoked.crls(pki, size)
        feed = revoked.Feed(pki, crl_der)
        threading.Thread(target=feed.serve_forever, daemon=True).start()
        try:
            if server == "gateway":
                url = f"http://127.0.0.1:{feed.server_address[1]}/revocations"
                process = _gateway(folder, pki, port, upstream_port, url, out)
            else:
                (folder / "crl.pem").write_bytes(crl_pem)
                process = _nginx(folder, pki, port, upstream_port, folder / "crl.pem", out)
            try:
                _wait_for_port(port, process)
                deadline = time.monotonic() + PATIENCE
                while not revoked.admitted(port, pki):  # the gateway: its snapshot is loaded
                    if time.monotonic() > deadline:
                        raise SystemExit("the server never admitted the client")
                    time.sleep(1)
                if requests:
                    shim = gw.build_wrk_shim(folder)
                    _requests(port, pki, 5, shim)  # warm-up
                    _control("--zero", process.pid)
                    handshakes = _requests(port, pki, seconds, shim)
                else:
                    _handshakes(port, pki, 5)  # warm-up: caches, the allocator, sessions
                    _control("--zero", process.pid)
                    handshakes = _handshakes(port, pki, seconds)
                time.sleep(1)  # the last connections' close
                _control("--dump", process.pid)
                dumped = _wait_for_dump(out, process.pid)
                instructions = _instructions(dumped)
                if keep is not None:
                    shutil.copy(dumped, keep / f"callgrind.{server}.out")
            finally:
                gw.stop(process)
        finally:
            feed.shutdown()
            feed.server_close()
            gw.stop(upstream)
    unit = "requests" if requests else "handshakes"
    return {
        "server": server,
        "revoked": size,
        unit: handshakes,
        "instructions": instructions,
        f"instructions_per_{unit[:-1]}": round(instructions / max(handshakes, 1)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--revoked", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=40)
    parser.add_argument("--nginx", action="store_true", help="count nginx as well")
    parser.add_argument("--source", type=Path, help="run the ostiary package in this folder")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--keep", type=Path, help="copy the callgrind dumps to this folder")
    parser.add_argument("--requests", action="store_true", help="count proxied requests")
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control", "openssl", "nginx", "wrk", "cc"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (Debian: valgrind, openssl, nginx)")
    use_source(args.source)
    rows = [count("gateway", args.revoked, args.seconds, args.keep, requests=args.requests)]
    if args.nginx:
        rows.append(count("nginx", args.revoked, args.seconds, args.keep, requests=args.requests))
    for row in rows:
        if args.requests:
            print(
                f"{row['server']}: {row['instructions_per_request']:,} instructions per proxied "
                f"request ({row['requests']} requests)"
            )
            continue
        print(
            f"{row['server']}: {row['instructions_per_handshake']:,} instructions per full "
            f"handshake ({row['handshakes']} handshakes, {row['revoked']:,} revoked)"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
