"""Officers: the role follows a bound certificate, never a name; officers act from the shell
with their own certificate; requester text cannot drive the terminal.

Against a real ``ostiary ca serve`` on loopback (the session's console CA).
"""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ostiary.cli.unlock import unlock_ca
from ostiary.store import AuditEntry, CertificateRequest, RequestRepository, RequestStatus
from tests.client.conftest import ok, refused
from tests.console.conftest import APPROVAL, OFFICER, Console, Identity

SENSOR_NOTE = "garage sensor"


@pytest.fixture
def api(console: Console) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(console.ca.root_file))
    with httpx.Client(base_url=console.ca.url, verify=context) as client:
        yield client


def _as(console: Console, identity: Identity) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(console.ca.root_file))
    context.load_cert_chain(identity.crt, identity.key)
    return httpx.Client(base_url=console.ca.url, verify=context)


def _csr(common_name: str, *dns: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)])
    )
    if dns:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def _submit(
    api: httpx.Client, csr: str, provisioner: str = APPROVAL, note: str = SENSOR_NOTE
) -> httpx.Response:
    return api.post("/requests", json={"csr": csr, "provisioner": provisioner, "note": note})


def _ca_dir(console: Console) -> list[str | Path]:
    return ["--dir", console.ca.home]


# --------------------------------------------------------------------------- A: the role


@pytest.mark.parametrize(
    "common_name",
    [
        pytest.param(OFFICER, id="fail/same-cn"),
        pytest.param("Officer-ALICE", id="fail/other-case"),
        pytest.param("ｏfficer-alice", id="fail/fullwidth-nfkc"),
    ],
)
def test_request_naming_an_officer_is_refused_at_submission(
    api: httpx.Client, common_name: str
) -> None:
    answer = _submit(api, _csr(common_name))
    assert answer.status_code == 403, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"].endswith("name-not-authorized")
    assert "officer" in answer.json()["detail"]


def test_request_naming_no_one_is_accepted(api: httpx.Client) -> None:
    assert _submit(api, _csr("garage-sensor")).status_code == 202


def test_provisioner_that_allows_officer_names_accepts_and_the_request_is_flagged(
    console: Console, api: httpx.Client
) -> None:
    console.ca.ca(
        "provisioner",
        "add",
        "named-doors",
        "--type",
        "approval",
        "--profile",
        "client",
        "--allow-name",
        "cn:*",
        "--allow-officer-names",
    )
    answer = _submit(api, _csr(OFFICER), provisioner="named-doors")
    assert answer.status_code == 202, answer.text
    request_id = answer.json()["request_id"]
    with _as(console, console.officer) as officer:
        listed = officer.get("/requests").json()["requests"]
        page = officer.get("/console/requests", headers={"Accept": "text/html"}).text
    flagged = next(r for r in listed if r["request_id"] == request_id)
    assert flagged["warnings"][0] == f"names officer {OFFICER!r}"
    officer_serial = x509.load_pem_x509_certificate(console.officer.crt.read_bytes()).serial_number
    assert f"same name as valid certificate {officer_serial:x}" in flagged["warnings"]
    assert "Names an existing identity" in page
    # the CLI flags it too, with the whole id: from the CA folder, and as the officer remotely
    table = ok("ca", "requests", "list", *_ca_dir(console)).stdout
    assert request_id in table and "names officer" in table
    remote = ok("ca", "requests", "list", "--format", "json", *console.officer_args()).stdout
    assert request_id in remote and "names officer" in remote
    stranger = refused("ca", "requests", "list", *console.officer_args(console.stranger))
    assert "does not carry the officer role" in stranger.stderr


def test_certificate_named_like_an_officer_does_not_carry_the_role(
    console: Console, tmp_path: Path
) -> None:
    twin = console.enroll(OFFICER, stem="officer-twin")  # CN=officer-alice, not bound
    with _as(console, twin) as client:
        page = client.get("/console", headers={"Accept": "application/json"})
        listing = client.get("/requests")
    assert page.status_code == 403, page.text
    assert listing.status_code == 403, listing.text
    with _as(console, console.officer) as client:  # the real officer, bound by fingerprint
        assert client.get("/console").status_code == 200
        assert client.get("/requests").status_code == 200


def test_officer_add_refuses_a_certificate_of_another_ca_or_bound_already(
    console: Console, tmp_path: Path
) -> None:
    again = refused(
        "ca", "officer", "add", OFFICER, "--cert", console.officer.crt, *_ca_dir(console)
    )
    assert "already carries" in again.stderr
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "forged")])
    now = x509.load_pem_x509_certificate(console.officer.crt.read_bytes()).not_valid_before_utc
    forged = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "forged.crt"
    path.write_bytes(forged.public_bytes(serialization.Encoding.PEM))
    foreign = refused("ca", "officer", "add", "mallory", "--cert", path, *_ca_dir(console))
    assert "not issued by this CA" in foreign.stderr


# --------------------------------------------------------------------------- B: no password


def test_listing_commands_need_no_password_and_never_prompt(console: Console) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OSTIARY_PASSWORD", "OSTIARY_PIN")}
    for command in (
        ["key", "list"],
        ["provisioner", "list"],
        ["requests", "list"],
        ["requests", "list", "--format", "json"],
    ):
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "from ostiary.cli.main import main; main()",
                "ca",
                *command,
                "--dir",
                str(console.ca.home),
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, (command, done.stderr)
        assert "password" not in (done.stdout + done.stderr).lower(), command


def test_officer_approves_from_the_shell_with_their_certificate_and_others_cannot(
    console: Console, api: httpx.Client
) -> None:
    body = _submit(api, _csr("porch.door.example", "porch.door.example")).json()
    request_id, code = body["request_id"], body["code"]
    for identity in (console.stranger, console.enroll(OFFICER, stem="officer-twin-2")):
        denied = refused(
            "ca", "requests", "approve", request_id, "--code", code, *console.officer_args(identity)
        )
        assert "does not carry the officer role" in denied.stderr
    no_cert = refused("ca", "requests", "approve", request_id, "--code", code)
    assert "--cert and --key" in no_cert.stderr
    assert api.get(f"/requests/{request_id}").json()["status"] == "pending"
    done = ok("ca", "requests", "approve", request_id[:8], "--code", code, *console.officer_args())
    assert request_id in done.stderr
    assert api.get(f"/requests/{request_id}").json()["status"] == "issued"
    with unlock_ca(console.ca.home, console.ca.password_file) as ca:
        with ca.store.transaction(read_only=True) as session:
            actor = (
                session.query(AuditEntry.actor)
                .filter(AuditEntry.event == "request.approved", AuditEntry.target == request_id)
                .scalar()
            )
    assert actor == f"officer:{OFFICER}"


# --------------------------------------------------------------------------- C: ids


def test_request_ids_are_shown_whole_and_a_unique_prefix_is_enough(
    console: Console, api: httpx.Client
) -> None:
    ids = ["feed" + "0" * 28, "feed" + "1" * 28]
    with unlock_ca(console.ca.home, console.ca.password_file) as ca:
        now = ca.authority.clock()
        csr = _csr("twin.door.example", "twin.door.example")
        with ca.store.transaction() as session:
            for request_id in ids:
                RequestRepository(session).add(
                    CertificateRequest(
                        request_id=request_id,
                        provisioner="open-doors",
                        subject="CN=twin.door.example",
                        sans=["dns:twin.door.example"],
                        csr_pem=csr,
                        note=None,
                        code_sha256=None,
                        status=RequestStatus.PENDING.value,
                        created_at=now,
                        expires_at=now + timedelta(days=1),
                    )
                )
    table = ok("ca", "requests", "list", *_ca_dir(console)).stdout
    assert all(request_id in table for request_id in ids)
    ambiguous = refused(
        "ca", "requests", "reject", "feed", "--reason", "x", *console.officer_args()
    )
    assert ids[0] in ambiguous.stderr and ids[1] in ambiguous.stderr
    truncated = ids[1][:8] + "…"  # as an older table printed it
    ok("ca", "requests", "reject", truncated, "--reason", "duplicate", *console.officer_args())
    assert api.get(f"/requests/{ids[1]}").json()["status"] == "rejected"
    refused("ca", "requests", "reject", "fee", "--reason", "x", *console.officer_args())
    unknown = refused(
        "ca", "requests", "reject", "0" * 32, "--reason", "x", *console.officer_args()
    )
    assert "no certificate request" in unknown.stderr


# --------------------------------------------------------------------------- D: bulk


def test_bulk_reject_in_the_shell_rejects_only_what_matches(
    console: Console, api: httpx.Client
) -> None:
    flood = [
        _submit(api, _csr(f"flood{i}"), provisioner="open-doors").json()["request_id"]
        for i in range(3)
    ]
    keep = _submit(api, _csr("keep.door.example", "keep.door.example")).json()["request_id"]
    refused(
        "ca", "requests", "reject", "--all", "--provisioner", "open-doors", *console.officer_args()
    )
    refused(
        "ca",
        "requests",
        "reject",
        "--all",
        "--provisioner",
        "open-doors",
        "--reason",
        "flood",
        *console.officer_args(console.stranger),
    )
    assert all(api.get(f"/requests/{i}").json()["status"] == "pending" for i in flood)
    done = ok(
        "ca",
        "requests",
        "reject",
        "--all",
        "--provisioner",
        "open-doors",
        "--reason",
        "flood",
        *console.officer_args(),
    )
    assert set(flood) <= set(done.stdout.split())
    assert keep not in done.stdout
    assert all(api.get(f"/requests/{i}").json()["reason"] == "flood" for i in flood)
    assert api.get(f"/requests/{keep}").json()["status"] == "pending"


def test_bulk_reject_in_the_console_needs_the_confirmation(
    console: Console, api: httpx.Client
) -> None:
    flood = [
        _submit(api, _csr(f"wave{i}"), provisioner="open-doors").json()["request_id"]
        for i in range(2)
    ]
    keep = _submit(api, _csr("stay.door.example", "stay.door.example")).json()["request_id"]
    with _as(console, console.officer) as officer:
        page = officer.get("/console/requests").text
        token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page)
        assert token is not None
        form = {"csrf_token": token.group(1), "provisioner": "open-doors", "reason": "wave"}
        unconfirmed = officer.post("/console/requests/reject-all", data=form)
        assert unconfirmed.status_code == 400
        assert all(api.get(f"/requests/{i}").json()["status"] == "pending" for i in flood)
        confirmed = officer.post("/console/requests/reject-all", data={**form, "confirm": "yes"})
        assert confirmed.status_code == 303, confirmed.text
    assert all(api.get(f"/requests/{i}").json()["reason"] == "wave" for i in flood)
    assert api.get(f"/requests/{keep}").json()["status"] == "pending"


# --------------------------------------------------------------------------- E: terminal


def test_requester_text_cannot_drive_the_terminal(console: Console, api: httpx.Client) -> None:
    hostile = "[red]urgent[/red] \x1b[2J\rforged\x9b31m\u202eevil"
    answer = _submit(api, _csr("ink\x1b[8m.door.example"), note=hostile)
    assert answer.status_code == 202, answer.text
    table = ok("ca", "requests", "list", *_ca_dir(console)).stdout
    for raw in ("\x1b", "\r", "\x9b", "\u202e"):
        assert raw not in table
    flat = "".join(table.split())
    assert "[red]urgent[/red]" in flat
    assert "\\x1b[2J" in flat and "\\rforged" in flat and "\\x9b31m" in flat
    assert "\\u202eevil" in flat and "ink\\x1b[8m.door.example" in flat


def test_officer_endpoints_refuse_strangers_before_reading_the_body(
    console: Console, api: httpx.Client
) -> None:
    for path in ("/requests/abcd/approve", "/requests/abcd/reject", "/requests/reject"):
        anonymous = api.post(path, content=b"not json")
        assert anonymous.status_code == 401, anonymous.text
        assert anonymous.headers["content-type"] == "application/problem+json"
        with _as(console, console.stranger) as stranger:
            assert stranger.post(path, content=b"not json").status_code == 403
    assert api.get("/requests").status_code == 401
