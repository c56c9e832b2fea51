"""A rotation under load, seen by relying parties: nginx (trust bundle and CRLs written by
``ostiary ca crl-watch --bundle-out``) and our gateway accept clients of the old and the new
intermediate before and after; leaves of the old one stay revocable and are refused once
revoked; a revoked intermediate's clients are refused (``issuer-revoked``). A CA of its own,
with its URL configured (as ``ca init --url`` does) so that certificates name the CA's CRLs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography import x509
from typer.testing import CliRunner

from ostiary.authority.rollover import reload_issuers, revoke_intermediate, rotate_intermediate
from ostiary.authority.root_crl import publish_root_crl
from ostiary.cli.main import app
from ostiary.client.api import OstiaryClient
from ostiary.core.ca import fingerprint_sha256
from tests.gateway.conftest import (
    CA,
    EchoUpstream,
    Issued,
    gateway_config,
    run_gateway,
    running_ca_with_url,
)
from tests.gateway.test_relying_parties import run_nginx, status_or_refused, wait_until
from tests.server.conftest import PASSWORD


@pytest.fixture(scope="module")
def ca(provisioners: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CA]:
    folder = tmp_path_factory.mktemp("rollover")
    with running_ca_with_url(provisioners, folder, "Rolling") as ca:
        yield ca


def crl_watch_once(ca: CA) -> None:
    """The CRLs of every live intermediate and the root, and the trust bundle (over
    ``ca.ca_file``, which nginx and the gateway read), as a deployment's crl-watch writes them.
    """
    result = CliRunner().invoke(
        app,
        [
            "ca", "crl-watch", "--once", "--ca-url", ca.url, "--root",
            "--out", str(ca.folder / "nginx" / "ca.crl.pem"), "--ca-root", str(ca.root_file),
            "--bundle-out", str(ca.ca_file),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def test_rotation_under_load_keeps_old_and_new_clients_passing_nginx_and_the_gateway(
    ca: CA, upstream: EchoUpstream
) -> None:
    live = ca.authority
    old_intermediate = live.issuer.certificate
    (ca.folder / "nginx").mkdir()
    alice = ca.issue("alice", ("email:alice@example.com",))  # of the old intermediate
    carol = ca.issue("carol", ("email:carol@example.com",))
    crl_watch_once(ca)
    assert ca.ca_file.read_bytes().count(b"BEGIN CERTIFICATE") == 2  # root, intermediate
    renewals = OstiaryClient(ca.running.server.https_url, [live.ca.root])
    assert not renewals.issuer_retiring(alice.certificate)  # what the renew daemon asks
    context = ca.running.context
    context.follow_rotations(lambda: reload_issuers(live.ca, PASSWORD))

    issued: list[x509.Certificate] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def load() -> None:  # issuance keeps going while the intermediate changes
        while not stop.is_set():
            try:
                issued.append(ca.issue("load", ("email:load@example.com",)).certificate)
            except BaseException as exc:
                failures.append(exc)
                return

    upstream_url = f"http://127.0.0.1:{upstream.port}"
    with (
        run_nginx(ca, upstream.port, ca.folder / "nginx") as nginx,
        run_gateway(gateway_config(ca, upstream_url)) as gateway,
    ):
        for client in (alice, carol):
            assert status_or_refused(ca, client, nginx.port) == 200
            assert status_or_refused(ca, client, gateway.port) == 200
        worker = threading.Thread(target=load)
        worker.start()
        signer = live.ca.load_root_signer(PASSWORD)
        try:
            new_intermediate = rotate_intermediate(
                live.ca, live.store, signer, key_type=live.ca.config.key_type,
                password=PASSWORD, now=datetime.now(UTC), actor="test",
            )  # fmt: skip
        finally:
            signer.close()
        wait_until(lambda: live.issuer.certificate == new_intermediate)  # the audit watch
        time.sleep(0.3)  # a few more issuances under the new one
        stop.set()
        worker.join(30)
        assert not failures, failures
        issuers = {c.issuer for c in issued}
        assert new_intermediate.subject in issuers

        bob = ca.issue("bob", ("email:bob@example.com",))  # of the new intermediate
        assert bob.certificate.issuer == new_intermediate.subject
        with renewals:  # the renew daemon of alice now renews early; bob's does not
            assert renewals.issuer_retiring(alice.certificate)
            assert not renewals.issuer_retiring(bob.certificate)
        crl_watch_once(ca)
        bundle = x509.load_pem_x509_certificates(ca.ca_file.read_bytes())
        assert bundle[1:] == [new_intermediate, old_intermediate]
        assert ca.folder.joinpath("nginx", "ca.crl.pem").read_bytes().count(b"BEGIN X509 CRL") == 3
        nginx_reload(nginx)
        with run_gateway(gateway_config(ca, upstream_url)) as reloaded:
            for client in (alice, bob):
                wait_until(lambda c=client: status_or_refused(ca, c, nginx.port) == 200)
                assert status_or_refused(ca, client, reloaded.port) == 200
                assert status_or_refused(ca, client, gateway.port) == 200  # fetched (AIA)

            # A leaf of the retiring intermediate is still revocable, and refused once revoked.
            ca.revoke(alice)
            crl_watch_once(ca)
            nginx_reload(nginx)
            wait_until(lambda: status_or_refused(ca, alice, nginx.port) != 200)
            wait_until(lambda: status_or_refused(ca, alice, reloaded.port) == 0)
            assert status_or_refused(ca, bob, nginx.port) == 200
            assert status_or_refused(ca, carol, reloaded.port) == 200

            # The old intermediate revoked: its clients are refused, the new one's are not.
            now = datetime.now(UTC)
            revoke_intermediate(
                live.ca, live.store, fingerprint_sha256(old_intermediate),
                reason=x509.ReasonFlags.ca_compromise, now=now, actor="test",
            )  # fmt: skip
            signer = live.ca.load_root_signer(PASSWORD)
            try:
                publish_root_crl(live.ca, live.store, signer, now=now, actor="test")
            finally:
                signer.close()
            wait_until(lambda: status_or_refused(ca, carol, reloaded.port) == 0)
            assert reloaded.metrics.refused["issuer-revoked"] >= 1
            assert status_or_refused(ca, bob, reloaded.port) == 200


def nginx_reload(nginx: Any) -> None:
    import subprocess

    subprocess.run(nginx.reload_command.split(), check=True, capture_output=True)
    time.sleep(0.5)  # the old worker finishes; the new one has the new files


_ = Issued
