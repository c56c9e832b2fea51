"""The server's own certificates: issued through the Authority, renewed before they expire."""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID
from sqlalchemy import select

from ostiary.authority.authority import Authority
from ostiary.store import AuditEntry
from ostiary.tls import client_context
from tests.server.conftest import Provisioners, Running, run_server
from tests.server.test_publish import ocsp_request


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


def served_certificate(running: Running) -> x509.Certificate:
    """The certificate a new handshake with the HTTPS listener presents.

    Not verified here: after the test moves the server's clock, the new certificate is "not
    yet valid" for this machine.
    """
    context = client_context([running.root])
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    port = running.server.https_port
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_the_server_certificate_is_issued_recorded_and_renewed_live(
    authority: Authority, provisioners: Provisioners
) -> None:
    clock = Clock(datetime.now(UTC))
    timed = Authority(authority.ca, authority.store, clock=clock)
    with run_server(timed, provisioners, renewal_poll=0.05) as running:
        first = served_certificate(running)
        assert first.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == (
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
        )
        names = first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "localhost" in names.get_values_for_type(x509.DNSName)
        lifetime = first.not_valid_after_utc - first.not_valid_before_utc
        assert lifetime <= timedelta(hours=24, minutes=1)
        with running.client() as keep_alive:
            assert keep_alive.get("/health").status_code == 200
            clock.now += timedelta(hours=17)  # past two thirds of 24 h
            deadline = time.monotonic() + 10
            while served_certificate(running).serial_number == first.serial_number:
                assert time.monotonic() < deadline, "the server certificate was not renewed"
                time.sleep(0.05)
            second = served_certificate(running)
            assert keep_alive.get("/health").status_code == 200  # open connections keep going
    assert second.not_valid_after_utc > first.not_valid_after_utc
    with authority.store.transaction(read_only=True) as session:
        issued = session.scalars(
            select(AuditEntry).where(AuditEntry.event == "certificate.issued")
        ).all()
    purposes = [e.details.get("purpose") for e in issued]
    assert purposes.count("tls-server") == 2
    targets = {e.target for e in issued}
    assert {f"{first.serial_number:x}", f"{second.serial_number:x}"} <= targets


def test_the_ocsp_responder_certificate_is_renewed_before_it_expires(
    authority: Authority, provisioners: Provisioners
) -> None:
    clock = Clock(datetime.now(UTC))
    timed = Authority(authority.ca, authority.store, clock=clock)
    with run_server(timed, provisioners) as running:
        responder = running.context.ocsp.responder_certificate
        request = ocsp_request(responder, running.authority.ca.intermediate)

        def ask() -> ocsp.OCSPResponse:
            with running.plain() as plain:
                answer = plain.post(
                    "/ocsp", content=request, headers={"content-type": "application/ocsp-request"}
                )
            return ocsp.load_der_ocsp_response(answer.content)

        before = ask()
        clock.now += timedelta(hours=17)
        after = ask()
    assert before.certificates[0] == responder
    renewed = after.certificates[0]
    assert renewed.serial_number != responder.serial_number
    assert renewed.not_valid_after_utc > responder.not_valid_after_utc
    assert after.this_update_utc >= clock.now.replace(microsecond=0) - timedelta(seconds=1)
    assert renewed.extensions.get_extension_for_class(x509.OCSPNoCheck)
    assert renewed.public_bytes(serialization.Encoding.DER) != responder.public_bytes(
        serialization.Encoding.DER
    )
