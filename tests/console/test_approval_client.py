"""``ostiary cert request --provisioner NAME`` for an approval provisioner, run again and
again against a real ``ca serve``: what it writes, resumes, collects and forgets, and when.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import Result
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ostiary.cli.unlock import unlock_ca
from ostiary.store import RequestRepository
from tests.client.conftest import ok, refused
from tests.console.conftest import APPROVAL, OFFICER, Console, console_in
from tests.console.test_csr_enrollment import issued_for, openssl_csr

REASON = ["--reason", "unknown device"]


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """A CA of this module's own: its requests, all from 127.0.0.1, would otherwise eat into
    the 40 the shared one takes from an address (server/limits.py).
    """
    yield from console_in(tmp_path_factory.mktemp("approval-client"))


def _ask(console: Console, name: str, crt: Path, *rest: str | Path) -> list[str | Path]:
    """The requester's command, the same each time it is run."""
    return ["cert", "request", name, crt, *rest, *console.client_args()]


def _request_id(result: Result) -> str:
    found = re.search(r"Request ([0-9a-f]{32}) is waiting", result.stderr)
    assert found is not None, result.stderr
    return found.group(1)


def _pending(crt: Path) -> str:
    return crt.with_name(crt.name + ".request").read_text().splitlines()[0]


def _listing(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def _certified(crt: Path, key: Path) -> x509.Certificate:
    certificate = x509.load_pem_x509_certificate(crt.read_bytes())
    private_key = serialization.load_pem_private_key(key.read_bytes(), None)
    assert certificate.public_key() == private_key.public_key()
    return certificate


def test_a_rejected_request_is_reported_once_then_the_same_command_starts_anew(
    console: Console, tmp_path: Path
) -> None:
    crt, key = tmp_path / "gate.crt", tmp_path / "gate.key"
    asked = _ask(console, "gate", crt, key, "--provisioner", "open-doors")
    first = _request_id(ok(*asked))
    first_key = key.read_bytes()
    ok("ca", "requests", "reject", first, *REASON, *console.officer_args())

    told = refused(*asked)
    assert f"request {first} was rejected by an officer: unknown device" in told.stderr
    assert "run the same command again to start a new request" in told.stderr
    assert _listing(tmp_path) == []  # the request file and the key made for it are gone

    second = _request_id(ok(*asked))
    assert second != first and _pending(crt) == second
    assert key.read_bytes() != first_key  # a new key for the new request
    ok("ca", "requests", "approve", second, *console.officer_args())
    ok(*asked)
    assert _certified(crt, key).subject.rfc4514_string() == "CN=gate"


def test_a_request_rejected_while_waiting_leaves_nothing_to_resume(
    console: Console, tmp_path: Path
) -> None:
    crt, key = tmp_path / "yard.crt", tmp_path / "yard.key"
    asked = _ask(console, "yard", crt, key, "--provisioner", "open-doors")
    first = _request_id(ok(*asked))
    ok("ca", "requests", "reject", first, *REASON, *console.officer_args())
    told = refused(*asked, "--wait", "--timeout", "5")
    assert "was rejected by an officer: unknown device" in told.stderr
    assert _listing(tmp_path) == []
    assert _request_id(ok(*asked)) != first


def test_an_approved_request_is_collected_without_wait(console: Console, tmp_path: Path) -> None:
    crt, key = tmp_path / "porch.crt", tmp_path / "porch.key"
    asked = _ask(console, "porch", crt, key, "--provisioner", "open-doors")
    request_id = _request_id(ok(*asked))
    ok("ca", "requests", "approve", request_id, *console.officer_args())
    collected = ok(*asked)
    assert "--wait" not in collected.stderr and "Issued serial" in collected.stderr
    assert _certified(crt, key).subject.rfc4514_string() == "CN=porch"
    assert _listing(tmp_path) == ["porch.crt", "porch.key"]


def test_a_pending_request_is_resumed_not_sent_again(console: Console, tmp_path: Path) -> None:
    crt, key = tmp_path / "shed.crt", tmp_path / "shed.key"
    asked = _ask(console, "shed", crt, key, "--provisioner", "open-doors")
    request_id = _request_id(ok(*asked))
    made = key.read_bytes()
    again = ok(*asked)
    assert f"Resuming request {request_id}" in again.stderr
    assert f"Request {request_id} is still waiting for an officer" in again.stderr
    assert "is waiting for an officer" not in again.stderr.replace("is still waiting", "")
    assert key.read_bytes() == made and _pending(crt) == request_id and not crt.exists()
    ok("ca", "requests", "approve", request_id, *console.officer_args())
    ok(*asked, "--wait")
    assert _certified(crt, key).subject.rfc4514_string() == "CN=shed"
    assert _listing(tmp_path) == ["shed.crt", "shed.key"]


def test_a_refused_submission_leaves_no_file(console: Console, tmp_path: Path) -> None:
    crt, key = tmp_path / "evil.crt", tmp_path / "evil.key"
    told = refused(*_ask(console, OFFICER, crt, key, "--provisioner", APPROVAL))  # 403
    assert "does not allow officers' names" in told.stderr
    assert _listing(tmp_path) == []


def test_a_refused_submission_leaves_a_key_that_was_there_untouched(
    console: Console, tmp_path: Path
) -> None:
    crt, key = tmp_path / "evil.crt", tmp_path / "evil.key"
    mine = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key.write_bytes(mine)
    asked = _ask(console, OFFICER, crt, key, "--provisioner", APPROVAL, "--force")
    refused(*asked)
    assert key.read_bytes() == mine
    assert _listing(tmp_path) == ["evil.key"]


def test_a_key_replaced_after_the_request_is_kept_when_it_is_rejected(
    console: Console, tmp_path: Path
) -> None:
    crt, key = tmp_path / "hall.crt", tmp_path / "hall.key"
    asked = _ask(console, "hall", crt, key, "--provisioner", "open-doors")
    request_id = _request_id(ok(*asked))
    theirs = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key.write_bytes(theirs)  # not the file we wrote: never ours to delete
    ok("ca", "requests", "reject", request_id, *REASON, *console.officer_args())
    told = refused(*asked)
    assert "was rejected by an officer" in told.stderr
    assert f"kept {key}, which is not the key written for this request" in told.stderr
    assert key.read_bytes() == theirs and _listing(tmp_path) == ["hall.key"]


def test_a_rejected_csr_request_is_reported_once_then_sent_anew(
    console: Console, tmp_path: Path
) -> None:
    key, csr = openssl_csr(tmp_path, "fay")
    crt = tmp_path / "fay.crt"
    asked = _ask(console, "fay", crt, "--csr", csr, "--provisioner", "open-doors")
    first = _request_id(ok(*asked))
    ok("ca", "requests", "reject", first, *REASON, *console.officer_args())
    told = refused(*asked)
    assert f"request {first} was rejected by an officer: unknown device" in told.stderr
    assert _listing(tmp_path) == ["elsewhere", "fay.csr"]
    assert key.exists()  # the CSR's key was never ours

    second = _request_id(ok(*asked))
    assert second != first
    ok("ca", "requests", "approve", second, *console.officer_args())
    collected = ok(*asked)  # approved: collected without --wait
    assert issued_for(crt, key).subject.rfc4514_string() == "CN=fay"
    assert "--wait" not in collected.stderr
    assert _listing(tmp_path) == ["elsewhere", "fay.crt", "fay.csr"]


def test_a_refused_csr_submission_leaves_no_request_file(console: Console, tmp_path: Path) -> None:
    _, csr = openssl_csr(tmp_path, OFFICER)
    crt = tmp_path / "evil.crt"
    told = refused(*_ask(console, OFFICER, crt, "--csr", csr, "--provisioner", APPROVAL))
    assert "does not allow officers' names" in told.stderr
    assert _listing(tmp_path) == ["elsewhere", f"{OFFICER}.csr"]


def test_an_expired_request_is_reported_once_then_the_same_command_starts_anew(
    console: Console, tmp_path: Path
) -> None:
    crt, key = tmp_path / "attic.crt", tmp_path / "attic.key"
    asked = _ask(console, "attic", crt, key, "--provisioner", "open-doors")
    first = _request_id(ok(*asked))
    with unlock_ca(console.ca.home, console.ca.password_file) as ca:
        with ca.store.transaction() as session:  # a day without an officer opening the queue
            record = RequestRepository(session).get(first)
            record.expires_at = ca.authority.clock() - timedelta(seconds=1)
    told = refused(*asked)
    assert f"request {first} expired before an officer approved it" in told.stderr
    assert _listing(tmp_path) == []
    assert _request_id(ok(*asked)) != first
