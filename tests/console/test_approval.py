"""Approval enrollment over the API and the command line, with its rejected twins."""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ostiary.authority.authority import Authority
from ostiary.cli.unlock import UnlockedCA, unlock_ca
from ostiary.core.errors import Conflict
from ostiary.provisioners import CAIdentity, approval_queue
from ostiary.provisioners.approval_decisions import approve_request
from ostiary.provisioners.approval_queue import request_view, submit_request
from ostiary.store import RequestRepository, RequestStatus
from tests.client.conftest import ok, refused
from tests.console.conftest import APPROVAL, Console


@pytest.fixture
def api(console: Console) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(console.ca.root_file))
    with httpx.Client(base_url=console.ca.url, verify=context) as client:
        yield client


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


def _submit(api: httpx.Client, csr: str, provisioner: str = APPROVAL) -> httpx.Response:
    return api.post("/requests", json={"csr": csr, "provisioner": provisioner, "note": "test"})


def _identity(ca: UnlockedCA) -> CAIdentity:
    return CAIdentity.from_certificates(ca.material.root, ca.material.intermediate)


def test_a_submitted_request_is_pending_with_a_code(console: Console, api: httpx.Client) -> None:
    answer = _submit(api, _csr("gate.door.example", "gate.door.example"))
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["status"] == "pending"
    assert re.fullmatch(r"[A-Z2-9]{8}", body["code"])
    poll = api.get(f"/requests/{body['request_id']}").json()
    assert poll["status"] == "pending"
    assert poll["code"] is None  # the code is shown once, to the requester only


@pytest.mark.parametrize(
    ("provisioner", "csr_names", "status", "code"),
    [
        pytest.param(APPROVAL, ("evil.example",), 403, "name-not-authorized", id="fail/name"),
        pytest.param("laptops", ("a.door.example",), 403, "policy-denied", id="fail/jwk-type"),
        pytest.param("nobody", ("a.door.example",), 404, "not-found", id="fail/unknown"),
    ],
)
def test_a_request_outside_the_provisioner_is_refused(
    api: httpx.Client, provisioner: str, csr_names: tuple[str, ...], status: int, code: str
) -> None:
    answer = _submit(api, _csr(csr_names[0], *csr_names), provisioner)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"].endswith(code)


@pytest.mark.parametrize(
    ("request_id", "status"),
    [pytest.param("0" * 32, 404, id="fail/unknown"), pytest.param("xyz", 400, id="fail/bad-id")],
)
def test_polling_a_wrong_id_is_a_problem(api: httpx.Client, request_id: str, status: int) -> None:
    answer = api.get(f"/requests/{request_id}")
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/problem+json"


def test_officer_cli_needs_the_code_and_approves_once(
    console: Console, api: httpx.Client, tmp_path: Path
) -> None:
    body = _submit(api, _csr("shed.door.example", "shed.door.example")).json()
    request_id, code = body["request_id"], body["code"]
    officer = console.officer_args()
    missing = refused("ca", "requests", "approve", request_id, *officer)
    assert "needs its one-time code" in missing.stderr and "requester" in missing.stderr
    wrong = refused("ca", "requests", "approve", request_id, "--code", "AAAAAAAA", *officer)
    assert "does not match" in wrong.stderr
    wrong_file, code_file, empty = tmp_path / "wrong", tmp_path / "code", tmp_path / "empty"
    wrong_file.write_text("AAAAAAAA\n")
    code_file.write_text(code + "\n")  # not on the command line: /proc/PID/cmdline shows that
    empty.write_text("")
    wrong = refused(
        "ca", "requests", "approve", request_id, "--code-file", str(wrong_file), *officer
    )
    assert "does not match" in wrong.stderr
    blank = refused("ca", "requests", "approve", request_id, "--code-file", str(empty), *officer)
    assert "is empty" in blank.stderr
    both = ("--code", code, "--code-file", str(code_file))
    assert "not both" in refused("ca", "requests", "approve", request_id, *both, *officer).stderr
    assert api.get(f"/requests/{request_id}").json()["status"] == "pending"
    ok("ca", "requests", "approve", request_id, "--code-file", str(code_file), *officer)
    answer = api.get(f"/requests/{request_id}").json()
    assert answer["status"] == "issued"
    issued = x509.load_pem_x509_certificate(answer["certificate"]["certificate"].encode())
    san = issued.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["shed.door.example"]
    again = refused("ca", "requests", "approve", request_id, "--code", code, *officer)
    assert "issued, not pending" in again.stderr
    refused("ca", "requests", "reject", request_id, "--reason", "late", *officer)


def test_an_expired_request_cannot_be_approved(console: Console, api: httpx.Client) -> None:
    body = _submit(api, _csr("old.door.example", "old.door.example")).json()
    with unlock_ca(console.ca.home, console.ca.password_file) as ca:
        later = ca.authority.clock() + timedelta(days=8)
        future = Authority(ca.material, ca.store, clock=lambda: later)
        view = request_view(ca.store, body["request_id"], now=later)
        assert view.status == RequestStatus.EXPIRED
        with pytest.raises(Conflict):
            approve_request(future, body["request_id"], officer="test", code=body["code"])


def test_request_without_wait_can_be_collected_later(console: Console, tmp_path: Path) -> None:
    crt, key = tmp_path / "later.crt", tmp_path / "later.key"
    client = ["--ca-url", console.ca.url, "--root", console.ca.root_file]
    first = ok("cert", "request", "later", crt, key, "--provisioner", "open-doors", *client)
    request_id = re.search(r"Request ([0-9a-f]{32})", first.stderr)
    assert request_id is not None and not crt.exists() and key.exists()
    pending = refused(
        "cert",
        "request",
        "later",
        crt,
        key,
        "--provisioner",
        "open-doors",
        "--wait",
        "--timeout",
        "0",
        *client,
    )
    assert "still pending" in pending.stderr
    ok("ca", "requests", "approve", request_id.group(1), *console.officer_args())
    ok("cert", "request", "later", crt, key, "--provisioner", "open-doors", "--wait", *client)
    certificate = x509.load_pem_x509_certificate(crt.read_bytes())
    private_key = serialization.load_pem_private_key(key.read_bytes(), None)
    assert certificate.public_key() == private_key.public_key()


def test_an_approval_request_without_subject_is_for_its_first_san(
    console: Console, tmp_path: Path
) -> None:
    crt, key = tmp_path / "door.crt", tmp_path / "door.key"
    client = ["--ca-url", console.ca.url, "--root", console.ca.root_file]
    asked = ["cert", "request", crt, key, "--san", "door.lab.example", "--provisioner",
             "open-doors", *client]  # fmt: skip
    first = ok(*asked)
    request_id = re.search(r"Request ([0-9a-f]{32})", first.stderr)
    assert request_id is not None
    ok("ca", "requests", "approve", request_id.group(1), *console.officer_args())
    ok(*asked, "--wait")
    certificate = x509.load_pem_x509_certificate(crt.read_bytes())
    assert certificate.subject.rfc4514_string() == "CN=door.lab.example"

    # Its twin: no SUBJECT and no --san leaves the officer nothing to approve.
    lone = refused("cert", "request", tmp_path / "x.crt", tmp_path / "x.key", "--provisioner",
                   "open-doors", *client)  # fmt: skip
    assert "give SUBJECT or a --san" in lone.stderr
    assert not (tmp_path / "x.key").exists()


def test_a_flood_of_requests_is_capped(
    console: Console, api: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    with unlock_ca(console.ca.home, console.ca.password_file) as ca:
        now = ca.authority.clock()
        with ca.store.transaction(read_only=True) as session:  # the cap is per provisioner
            waiting = RequestRepository(session).count_pending(APPROVAL, now=now)
        monkeypatch.setattr(approval_queue, "MAX_PENDING", waiting + 1)
        csr = x509.load_pem_x509_csr(_csr("a.door.example", "a.door.example").encode())
        submit_request(ca.store, APPROVAL, csr, ca=_identity(ca), now=now)
        with pytest.raises(Conflict, match="pending requests"):
            submit_request(ca.store, APPROVAL, csr, ca=_identity(ca), now=now)


def test_an_approval_that_died_midway_frees_the_request_after_a_while(
    console: Console, api: httpx.Client
) -> None:
    body = _submit(api, _csr("c.door.example", "c.door.example")).json()
    request_id = body["request_id"]
    with unlock_ca(console.ca.home, console.ca.password_file) as ca:
        now = ca.authority.clock()
        with ca.store.transaction() as session:  # an officer's process claimed it, then died
            assert RequestRepository(session).claim(request_id, now=now)
        assert api.get(f"/requests/{request_id}").json()["status"] == "approving"
        with pytest.raises(Conflict, match="approving"):
            approve_request(ca.authority, request_id, officer="test", code=body["code"])
        later = now + timedelta(minutes=6)
        future = Authority(ca.material, ca.store, clock=lambda: later)
        certificate = approve_request(future, request_id, officer="test", code=body["code"])
    answer = api.get(f"/requests/{request_id}").json()
    assert answer["status"] == "issued"
    assert answer["certificate"]["serial_number"] == f"{certificate.serial_number:x}"
