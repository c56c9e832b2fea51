"""certmonger (Debian) against ``ostiary ca serve``: an EC CA behind the RSA RA.

certmonger sends AES-256 + SHA-256 over GET, verifies the CertRep's signature with the RA
certificate, and pre-builds its CertPoll (GetCertInitial) for a PENDING answer.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from ostiary.store import CertificateRequest, ScepTransaction
from tests.pkilint_helper import lint_certificate
from tests.scep.certmonger import add_ca_script, start_certmonger
from tests.scep.conftest import ScepServer, ostiary


def _run(folder: Path, script: str, timeout: float = 180) -> str:
    process = start_certmonger(folder, script)
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


def _status(output: str, request: str) -> str:
    listing = output[output.rindex(f"Request ID '{request}'") :]
    match = re.search(r"status: (\S+)", listing)
    assert match is not None, listing
    return match.group(1)


def test_certmonger_enrolls_renews_and_a_wrong_challenge_is_rejected(
    ec_ca: ScepServer, tmp_path: Path
) -> None:
    challenge = ec_ca.challenge("users", "alice", "upn:alice@corp.example", "alice@corp.example")
    cert, key = tmp_path / "alice.pem", tmp_path / "alice.key"
    before = ec_ca.count_certificates()
    output = _run(
        tmp_path,
        add_ca_script(ec_ca.url("users"))
        + f"getcert request -c T -f {cert} -k {key} -L {challenge} -N CN=alice -I alice -w; "
        f"cp {cert} {tmp_path}/first.pem; "
        "getcert rekey -i alice -w; "
        f"getcert request -c T -f {tmp_path}/bad.pem -k {tmp_path}/bad.key -L wrong-challenge "
        "-N CN=mallory -I bad -w || true; "
        "getcert list",
    )
    assert _status(output, "alice") == "MONITORING"
    assert _status(output, "bad") == "CA_REJECTED"
    first = x509.load_pem_x509_certificate((tmp_path / "first.pem").read_bytes())
    renewed = x509.load_pem_x509_certificate(cert.read_bytes())
    assert renewed.serial_number != first.serial_number  # certmonger renewed
    assert renewed.subject == first.subject
    assert ec_ca.count_certificates() == before + 2  # the wrong challenge issued nothing
    # the user profile: UPN + e-mail from the challenge, as the mail gateway needs
    for certificate in (first, renewed):
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.RFC822Name) == ["alice@corp.example"]
        upn = [n for n in sans if isinstance(n, x509.OtherName)]
        assert len(upn) == 1 and upn[0].type_id.dotted_string == "1.3.6.1.4.1.311.20.2.3"
        assert lint_certificate(certificate.public_bytes(serialization.Encoding.DER)) == []


def _officer(ec_ca: ScepServer, folder: Path) -> list[str]:
    """An officer certificate bound with ``ca officer add``: the options of ``ca requests``."""
    password = ("--password-file", str(ec_ca.password_file))
    ostiary(ec_ca.home, "ca", "provisioner", "add", "ops", *password)
    token = ostiary(
        ec_ca.home, "ca", "token", "officer-1", "--provisioner", "ops", *password
    ).strip()
    root = folder / "root.pem"
    root.write_bytes(ec_ca.serve.root.public_bytes(serialization.Encoding.PEM))
    client = ("--ca-url", ec_ca.serve.https_url, "--root", str(root))
    crt, key = folder / "officer.crt", folder / "officer.key"
    ostiary(ec_ca.home, "cert", "request", "officer-1", str(crt), str(key), "--token", token,
            *client)  # fmt: skip
    ostiary(ec_ca.home, "ca", "officer", "add", "officer-1", "--cert", str(crt))
    return ["--cert", str(crt), "--key", str(key), *client]


def _request_id(ec_ca: ScepServer, subject: str, deadline: float) -> str:
    """The queued request of the SCEP transaction for ``subject`` (other tests queue theirs
    on the same session-wide CA and provisioner: picking "the" gated transaction approved
    another test's request once, and certmonger was answered PENDING to the end)."""
    while time.monotonic() < deadline:
        with ec_ca.store() as store, store.transaction(read_only=True) as session:
            found = session.scalars(
                select(ScepTransaction.request_id)
                .join(
                    CertificateRequest, CertificateRequest.request_id == ScepTransaction.request_id
                )
                .where(
                    ScepTransaction.provisioner == "gated", CertificateRequest.subject == subject
                )
            ).all()
            assert len(found) <= 1, found
            if found:
                return str(found[0])
        time.sleep(0.2)
    raise AssertionError("certmonger's request never reached the queue")


@pytest.mark.timeout(600)  # an officer enrolled by the CLI, then certmonger's polls
def test_certmonger_waits_through_pending_until_an_officer_approves(
    ec_ca: ScepServer, tmp_path: Path
) -> None:
    officer = _officer(ec_ca, tmp_path)
    challenge = ec_ca.challenge("gated", "printer-3", "uri:urn:dev:printer-3")
    cert = tmp_path / "printer.pem"
    # certmonger polls on its own schedule; 'resubmit' makes it poll now, with a new CSR for
    # the same key (a fresh subjectKeyIdentifier) under the same transactionID
    script = add_ca_script(ec_ca.url("gated")) + (
        f"getcert request -c T -f {cert} -k {tmp_path}/printer.key -L {challenge} "
        "-N CN=printer-3 -I p; "
        "for i in $(seq 900); do "
        'getcert list -i p | grep -q "status: MONITORING" && break; '
        "[ $((i % 10)) -eq 0 ] && getcert resubmit -i p >/dev/null; sleep 0.2; done; "
        "getcert list -i p"
    )
    process = start_certmonger(tmp_path, script)
    collected: list[str] = []
    reader = threading.Thread(target=lambda: collected.append(process.communicate()[0]))
    reader.start()
    try:
        request_id = _request_id(ec_ca, "CN=printer-3", time.monotonic() + 120)
        deadline = time.monotonic() + 30
        while "SCEP gated: PKCS_REQ pending" not in ec_ca.serve.log.read_text():
            assert time.monotonic() < deadline, "certmonger was never answered PENDING"
            time.sleep(0.2)
        assert not cert.exists()
        ostiary(ec_ca.home, "ca", "requests", "approve", request_id, *officer)
    finally:
        reader.join(timeout=360)  # ~45 s on a quiet machine; its loop alone may take 300 s
        ended = process.poll() is not None
        if not ended:
            process.kill()  # its output so far (certmonger's debug log) then reaches collected
            reader.join(timeout=30)
    server_log = ec_ca.serve.log.read_text()
    assert ended, (
        "certmonger's script did not end within 360 s:\n"
        + (collected[0][-3000:] if collected else "")
        + server_log[-3000:]
    )
    output = collected[0]
    assert _status(output, "p") == "MONITORING", output[-3000:] + server_log[-3000:]
    issued = x509.load_pem_x509_certificate(cert.read_bytes())
    assert issued.subject.rfc4514_string() == "CN=printer-3"
    result = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(cert)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "URI:urn:dev:printer-3" in result.stdout
