"""CPU per full mTLS handshake in two OpenSSL builds this machine has: the system's, which
Python's ``ssl`` (and so the gateway, and Debian's nginx) use, and the one cryptography's
wheel bundles, reachable through pyOpenSSL.

    python bench/tls_libraries.py [--handshakes 300] [--rounds 2] [--json FILE]

Both ends run in this process over memory BIOs (no sockets, no event loop): an ECDSA P-256
server and client certificate under one root, TLS 1.3, the client's certificate required
and verified. Printed per library: the CPU of both ends per handshake, and the server end's
alone (timed around its calls, ``getpeercert``/``get_peer_certificate`` included). A ratio
within one run, as everywhere in bench/: it tells how much of the gateway's full handshake
(91 % of it OpenSSL's own work, docs/BENCHMARKS.md) a newer OpenSSL would save, the question
that issue 20's "3x nginx at 100k revoked" turns on. It does not measure the gateway.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL


def _certificate(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    usage: list[x509.ObjectIdentifier] | None,
) -> x509.Certificate:
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def write_certificates(folder: Path) -> None:
    """root.pem; srv.pem/srv.key (serverAuth, localhost); cli.pem/cli.key (clientAuth)."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _certificate("bench root", root_key, None, None)
    (folder / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    for stem, usage in (
        ("srv", ExtendedKeyUsageOID.SERVER_AUTH),
        ("cli", ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = _certificate(stem, key, (root, root_key), [usage])
        (folder / f"{stem}.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        (folder / f"{stem}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def stdlib_handshakes(folder: Path, count: int) -> tuple[float, float]:
    """(CPU s of both ends, of the server end) per handshake with Python's ssl."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(folder / "srv.pem", folder / "srv.key")
    server_context.load_verify_locations(folder / "root.pem")
    server_context.verify_mode = ssl.CERT_REQUIRED
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.load_cert_chain(folder / "cli.pem", folder / "cli.key")
    client_context.load_verify_locations(folder / "root.pem")
    server_cpu = 0.0
    start = time.process_time()
    for _ in range(count):
        s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
        server = server_context.wrap_bio(s_in, s_out, server_side=True)
        client = client_context.wrap_bio(c_in, c_out, server_hostname="localhost")
        client_done = server_done = False
        while not (client_done and server_done):
            if not client_done:
                try:
                    client.do_handshake()
                    client_done = True
                except ssl.SSLWantReadError:
                    pass
            s_in.write(c_out.read())
            if not server_done:
                mark = time.process_time()
                try:
                    server.do_handshake()
                    server_done = True
                except ssl.SSLWantReadError:
                    pass
                server_cpu += time.process_time() - mark
            c_in.write(s_out.read())
        mark = time.process_time()
        server.getpeercert(binary_form=True)
        server_cpu += time.process_time() - mark
    return (time.process_time() - start) / count, server_cpu / count


def pyopenssl_handshakes(folder: Path, count: int) -> tuple[float, float]:
    """(CPU s of both ends, of the server end) per handshake with pyOpenSSL."""
    server_context = SSL.Context(SSL.TLS_METHOD)
    server_context.use_certificate_chain_file(str(folder / "srv.pem"))
    server_context.use_privatekey_file(str(folder / "srv.key"))
    server_context.load_verify_locations(str(folder / "root.pem"))
    server_context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, None)
    client_context = SSL.Context(SSL.TLS_METHOD)
    client_context.use_certificate_chain_file(str(folder / "cli.pem"))
    client_context.use_privatekey_file(str(folder / "cli.key"))
    client_context.load_verify_locations(str(folder / "root.pem"))
    client_context.set_verify(SSL.VERIFY_PEER, None)
    server_cpu = 0.0
    start = time.process_time()
    for _ in range(count):
        server = SSL.Connection(server_context, None)
        server.set_accept_state()
        client = SSL.Connection(client_context, None)
        client.set_connect_state()
        client.set_tlsext_host_name(b"localhost")
        client_done = server_done = False
        while not (client_done and server_done):
            if not client_done:
                try:
                    client.do_handshake()
                    client_done = True
                except SSL.WantReadError:
                    pass
            _pump(client, server)
            if not server_done:
                mark = time.process_time()
                try:
                    server.do_handshake()
                    server_done = True
                except SSL.WantReadError:
                    pass
                server_cpu += time.process_time() - mark
            _pump(server, client)
        mark = time.process_time()
        server.get_peer_certificate()
        server_cpu += time.process_time() - mark
    return (time.process_time() - start) / count, server_cpu / count


def _pump(source: SSL.Connection, target: SSL.Connection) -> None:
    try:
        target.bio_write(source.bio_read(1 << 16))
    except SSL.WantReadError:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handshakes", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    system = ssl.OPENSSL_VERSION
    bundled = SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        write_certificates(folder)
        for round_ in range(1, args.rounds + 1):
            for library, run in (
                (f"ssl / {system}", stdlib_handshakes),
                (f"pyOpenSSL / {bundled}", pyopenssl_handshakes),
            ):
                both, server = run(folder, args.handshakes)
                rows.append(
                    {
                        "round": round_,
                        "library": library,
                        "both_us": both * 1e6,
                        "server_us": server * 1e6,
                    }
                )
                print(
                    f"round {round_}  {library:42s} both ends {both * 1e6:7.0f} µs"
                    f"   server end {server * 1e6:7.0f} µs"
                )
    servers: dict[str, list[float]] = {}
    for row in rows:
        servers.setdefault(str(row["library"]), []).append(float(str(row["server_us"])))
    first, second = (min(v) for v in servers.values())
    print(f"server end, best of rounds: bundled / system = {second / first:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "server_ratio": second / first}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
