"""The CA server (in-process, real TLS on loopback) with its issuing key in a SoftHSM2 token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from ostiary.authority.authority import Authority
from ostiary.authority.folder import CAPaths
from ostiary.authority.token_ca import init_token_ca_folder
from ostiary.config import CAConfig, Pkcs11Settings
from ostiary.core.lifetime import Lifetime
from ostiary.provisioners import JWKProvisioner, ProvisionerClaims
from ostiary.signers.pkcs11 import Pkcs11Signer
from ostiary.store import Store, migrate
from tests.hsm.conftest import PIN, SoftHSM
from tests.server.conftest import Provisioners, make_csr, run_server

SEAL = b"server test sealing password"


def test_enrollment_signs_in_the_token_and_a_lost_token_is_a_503_problem(
    softhsm: SoftHSM, tmp_path: Path
) -> None:
    config = CAConfig(
        name="Token Server",
        kms="pkcs11",
        pkcs11=Pkcs11Settings(module=str(softhsm.module), token="server-gone"),
    )
    made = datetime.now(UTC) - timedelta(hours=1)
    material = init_token_ca_folder(CAPaths(tmp_path / "ca"), config, PIN.encode(), now=made)
    assert isinstance(material.signer, Pkcs11Signer)
    claims = ProvisionerClaims(
        lifetime=Lifetime(timedelta(minutes=5), timedelta(hours=24), timedelta(days=30))
    )
    ops = JWKProvisioner.create("ops", password=SEAL, claims=claims)
    admins = JWKProvisioner.create("admins", password=SEAL, claims=claims, admin=True)
    provisioners = Provisioners(
        ops, ops.load_private_key(SEAL), admins, admins.load_private_key(SEAL)
    )
    migrate(material.database_url)
    store = Store.from_url(material.database_url)
    try:
        provisioners.record(store)
        authority = Authority(material, store)
        assert not authority.signs_in_process  # /sign signs in a worker thread
        with run_server(authority, provisioners) as running:
            identity = running.enroll("alice@example.com", ["alice@example.com"])
            leaf = identity.certificate
            leaf.verify_directly_issued_by(material.intermediate)
            # The token is gone (session closed, as when an HSM drops the connection).
            material.signer.close()
            csr, _ = make_csr("bob@example.com")
            with running.client() as client:
                answer = client.post(
                    "/sign", json={"csr": csr, "token": running.sign_token("bob@example.com")}
                )
            assert answer.status_code == 503, answer.text
            assert answer.headers["content-type"].startswith("application/problem+json")
            problem = answer.json()
            assert problem["type"].endswith("signer-unavailable"), problem
            assert "closed" in problem["detail"] and PIN not in answer.text
    finally:
        store.dispose()
