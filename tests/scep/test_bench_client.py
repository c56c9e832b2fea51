"""bench/scep_lean.py, the SCEP bench's own client, against a real ``ca serve``.

Its PKCSReq (single DES, SHA-1, as micromdm's scepclient sends) and its CertRep reading are
written for the bench (scepclient costs ~10 ms of CPU per enrollment, more than the servers
it measures); these tests show that the server accepts what it sends, on kept-alive
connections, with the RA picked out of GetCACert's chain, and that a refused enrollment is
counted as a failure, not raised, and the level goes on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.scep.conftest import ScepServer

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
import scep_lean  # bench/scep_lean.py


def _device(server: ScepServer, cn: str, challenge: str | None = None) -> scep_lean.Device:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return scep_lean.make_device(key, cn, challenge or server.challenge("devices", cn))


@pytest.mark.parametrize("ca", ["rsa_ca", "ec_ca"], ids=["ok/rsa-ca", "ok/p256-ca-rsa-ra"])
def test_lean_client_enrolls_over_kept_alive_connections(
    request: pytest.FixtureRequest, ca: str
) -> None:
    server: ScepServer = request.getfixturevalue(ca)
    devices = [_device(server, f"lean-{ca}-{n}") for n in range(4)]
    before = server.count_certificates()
    outcome = scep_lean.run_enrollments(server.url("devices"), 2, devices)
    assert outcome.failures == []
    assert len(outcome.times) == 4
    assert outcome.requests == 12  # GetCACaps, GetCACert, PKIOperation: one connection each
    assert server.count_certificates() == before + 4


def test_a_wrong_challenge_is_a_counted_failure(rsa_ca: ScepServer) -> None:
    rsa_ca.challenge("devices", "lean-wrong")
    devices = [_device(rsa_ca, "lean-wrong", "not-the-challenge"), _device(rsa_ca, "lean-right")]
    before = rsa_ca.count_certificates()
    outcome = scep_lean.run_enrollments(rsa_ca.url("devices"), 1, devices)
    assert len(outcome.times) == 1
    assert len(outcome.failures) == 1
    # FAILURE (2) with failInfo badRequest (2), read from a CertRep whose signature verified
    assert "pkiStatus 2, failInfo 2" in outcome.failures[0], outcome.failures[0]
    assert rsa_ca.count_certificates() == before + 1
