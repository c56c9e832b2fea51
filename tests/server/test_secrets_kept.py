"""Secrets stay secret (issue 19): one real ``ostiary ca serve`` is driven through flows that
carry known secrets (the CA password, a wrong password, right, wrong, replayed and garbled
enrollment tokens, an ACME EAB HMAC key from ``ca acme eab add``, a SCEP challenge from
``ca scep challenge`` sent wrong and right), then its log file, every
problem body it returned and the argument lists of the server and the CLI calls are searched
for them, and none is found. Key and database files are 0600 and their folders 0700 after
``ca init`` and after ``ca serve`` has run (SQLite's -wal/-shm files included).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from ostiary.authority.folder import CAMaterial
from ostiary.store import sqlite_url_for
from tests.scep.client import Request as ScepRequest
from tests.scep.client import make_csr as make_csr_scep
from tests.scep.client import self_signed, send
from tests.server.conftest import PASSWORD, Provisioners, make_csr
from tests.server.processes import CAFolder, ServeProcess, make_ca_folder, start_serve

OSTIARY = "from ostiary.cli.main import main; main()"
WRONG_CHALLENGE = "wrong-challenge-5519-marker"
WRONG_PASSWORD = b"wrong horse battery staple 0451"
#: A string that looks like a token and carries a marker to look for.
GARBLED_TOKEN = "eyJhbGciOiJFUzI1NiJ9.c2VjcmV0LW1hcmtlci05OTE3.c2ln"


@dataclass
class Seen:
    """What the run used (secrets) and what it returned and ran (places to search)."""

    secrets: dict[str, str] = field(default_factory=dict)
    bodies: list[str] = field(default_factory=list)
    argument_lists: list[str] = field(default_factory=list)


def cli(
    ca: CAFolder, seen: Seen, *arguments: str, password: bool = True
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", OSTIARY, *arguments, "--dir", str(ca.paths.root)]
    if password:
        command += ["--password-file", str(ca.password_file)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen.argument_lists.append(Path(f"/proc/{process.pid}/cmdline").read_bytes().decode())
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


@pytest.fixture(scope="module")
def served(
    ca_material: CAMaterial, provisioners: Provisioners, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[CAFolder, ServeProcess, Seen]]:
    folder = tmp_path_factory.mktemp("secrets")
    ca = make_ca_folder(ca_material, provisioners, sqlite_url_for(folder / "ca.db"), folder / "ca")
    seen = Seen(secrets={"CA password": PASSWORD.decode(), "wrong password": ""})
    server = start_serve(ca, folder / "serve.log")
    try:
        seen.argument_lists.append(
            Path(f"/proc/{server.process.pid}/cmdline").read_bytes().decode()
        )
        yield ca, server, seen
    finally:
        server.stop()


def test_no_secret_in_logs_problem_bodies_or_argument_lists(
    served: tuple[CAFolder, ServeProcess, Seen], provisioners: Provisioners, tmp_path: Path
) -> None:
    ca, server, seen = served
    now = datetime.now(UTC)
    ops, key = provisioners.ops, provisioners.ops_key
    right = ops.mint_sign_token(key, "alice@example.com", ca=ca.identity, now=now)
    wrong = ops.mint_sign_token(
        ec.generate_private_key(ec.SECP256R1()), "alice@example.com", ca=ca.identity, now=now
    )
    seen.secrets.update({"right token": right, "wrong token": wrong, "garbled": GARBLED_TOKEN})
    csr, _ = make_csr("alice@example.com", ())
    with server.client() as client:
        for token, status in ((wrong, 401), (GARBLED_TOKEN, None), (right, 201), (right, None)):
            answer = client.post("/sign", json={"csr": csr, "token": token})
            if status is not None:
                assert answer.status_code == status, answer.text
            else:  # garbled, replayed: refused, whichever 4xx
                assert 400 <= answer.status_code < 500, answer.text
            if answer.status_code >= 400:
                seen.bodies.append(answer.text)
        # The token in the Authorization header of an admin route, refused.
        refused = client.get("/certificates", headers={"Authorization": f"Bearer {wrong}"})
        assert refused.status_code in (401, 403), refused.text
        seen.bodies.append(refused.text)

    # An EAB key: made by the CLI (printed once, to its caller), never elsewhere.
    added = cli(
        ca,
        seen,
        "ca",
        "provisioner",
        "add",
        "partners",
        "--type",
        "acme",
        "--challenges",
        "http-01",
        "--profiles",
        "client",
        "--require-eab",
    )
    assert added.returncode == 0, added.stderr
    made = cli(ca, seen, "ca", "acme", "eab", "add", "--provisioner", "partners")
    assert made.returncode == 0, made.stderr
    (hmac_key,) = [
        line.split(": ", 1)[1] for line in made.stdout.splitlines() if line.startswith("hmac-key")
    ]
    seen.secrets["EAB HMAC key"] = hmac_key

    # A SCEP challenge: made by the CLI, sent wrong and right in a device's PKCSReq.
    added = cli(ca, seen, "ca", "provisioner", "add", "devices", "--type", "scep",
                "--profile", "client")  # fmt: skip
    assert added.returncode == 0, added.stderr
    made = cli(ca, seen, "ca", "scep", "challenge", "--provisioner", "devices",
               "--subject", "device-7", password=False)  # fmt: skip
    assert made.returncode == 0, made.stderr
    challenge = made.stdout.strip().splitlines()[-1]
    seen.secrets["SCEP challenge"] = challenge
    with server.plain() as http:
        answer = http.get("/scep/devices", params={"operation": "GetCACert"})
        assert answer.status_code == 200
        (ra,) = [
            c
            for c in pkcs7.load_der_pkcs7_certificates(answer.content)
            if not c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        ]
        device = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        signer = self_signed(device, "device-7")
        statuses = []
        for sent in (WRONG_CHALLENGE, challenge):
            request = make_csr_scep(device, "device-7", sent).public_bytes(Encoding.DER)
            reply = send(http, "/scep/devices", ScepRequest(device, signer, 19, request, [ra]), ra)
            statuses.append(reply.status)
        assert statuses == [2, 0]  # FAILURE, then SUCCESS (RFC 8894 pkiStatus)
    seen.secrets["wrong SCEP challenge"] = WRONG_CHALLENGE

    # A wrong CA password: the server refuses to start, and says so without echoing it.
    wrong_file = tmp_path / "wrong-password"
    wrong_file.write_bytes(WRONG_PASSWORD + b"\n")
    seen.secrets["wrong password"] = WRONG_PASSWORD.decode()
    refused_start = subprocess.run(
        [
            sys.executable,
            "-c",
            OSTIARY,
            "ca",
            "serve",
            "--dir",
            str(ca.paths.root),
            "--password-file",
            str(wrong_file),
            "--address",
            "127.0.0.1:0",
            "--http-address",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused_start.returncode != 0
    seen.bodies.append(refused_start.stdout + refused_start.stderr)

    log = server.log.read_text(errors="replace")
    places = {"serve log": log, **{f"body {i}": b for i, b in enumerate(seen.bodies)}}
    places.update({f"argv {i}": a for i, a in enumerate(seen.argument_lists)})
    assert len(seen.argument_lists) == 5 and "--password-file" in seen.argument_lists[0]
    for name, secret in seen.secrets.items():
        assert secret
        for place, text in places.items():
            assert secret not in text, f"the {name} appears in the {place}"
            # and no long piece of it (a token's signature, a key cut short)
            for piece in (secret[-24:], secret[:24]) if len(secret) > 48 else ():
                assert piece not in text, f"part of the {name} appears in the {place}"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_and_database_files_are_0600_in_0700_folders(
    served: tuple[CAFolder, ServeProcess, Seen], tmp_path: Path
) -> None:
    ca, server, _ = served
    password = tmp_path / "password"
    password.write_bytes(PASSWORD + b"\n")
    fresh = tmp_path / "fresh"
    made = subprocess.run(
        [
            sys.executable,
            "-c",
            OSTIARY,
            "ca",
            "init",
            "--name",
            "Modes",
            "--dir",
            str(fresh),
            "--password-file",
            str(password),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert made.returncode == 0, made.stderr
    with server.client() as client:  # the served folder after the run has written to it
        assert client.get("/roots").status_code in (200, 404)
    for root in (fresh, ca.paths.root):
        secret_files = [
            p
            for p in root.rglob("*")
            if p.is_file() and (p.suffix == ".key" or ".db" in p.name or p.name.endswith("-wal"))
        ]
        assert any(p.suffix == ".key" for p in secret_files), sorted(root.rglob("*"))
        for path in secret_files:
            assert _mode(path) == 0o600, (path, oct(_mode(path)))
            assert _mode(path.parent) == 0o700, (path.parent, oct(_mode(path.parent)))
    assert os.stat(fresh).st_mode & 0o077 == 0
