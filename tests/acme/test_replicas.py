"""Two ``ca serve`` replicas on one PostgreSQL: nonces and orders are shared state."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

from ostiary.authority.folder import CAMaterial
from tests.acme.conftest import RawClient, Responder, b64url, csr_der, problem_type, serving_acme
from tests.acme.test_rejections import key_change_inner, poll, ready_order
from tests.conftest import fresh_postgres_schema
from tests.server.conftest import Provisioners
from tests.server.processes import start_serve

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ORDER = {"identifiers": [{"type": "dns", "value": "vm"}]}


def test_nonces_and_orders_cross_replicas(
    ca_material: CAMaterial,
    provisioners: Provisioners,
    postgres_database_url: str,
    tmp_path: Path,
) -> None:
    with (
        fresh_postgres_schema(postgres_database_url) as url,
        serving_acme(ca_material, provisioners, tmp_path, database_url=url) as a,
    ):
        b_process = start_serve(
            a.folder, tmp_path / "b.log", options=("--acme-http-port", str(a.http_port))
        )
        responder = Responder(a.http_port)
        on_a = RawClient(a)
        on_a.register()
        on_b = on_a.on(type(a)(b_process, a.folder, a.root_file, a.http_port))
        try:
            # A nonce handed out by A is accepted by B, once; replayed on A it is refused.
            nonce = on_a.nonce()
            order_url = on_b.directory["newOrder"]
            body = {"identifiers": [{"type": "dns", "value": "vm"}]}
            made = on_b.post(order_url, body, header={"nonce": nonce})
            assert made.status_code == 201, made.text
            again = on_b.post(order_url, body, header={"nonce": nonce})
            assert problem_type(again) == "badNonce"
            replayed = on_a.post(on_a.directory["newOrder"], body, header={"nonce": nonce})
            assert problem_type(replayed) == "badNonce"

            # An order made and validated on A is finalized and downloaded on B.
            order = ready_order(on_a, responder, ["localhost"])
            assert order["status"] == "ready"
            key = ec.generate_private_key(ec.SECP256R1())
            finalized = on_b.post(
                on_b.moved(str(order["finalize"])), {"csr": b64url(csr_der(["localhost"], key))}
            )
            assert finalized.status_code == 200, finalized.text
            done = poll(on_b, on_b.moved(str(order["url"])), until=("valid",))
            chain = on_b.post(str(done["certificate"]), None)
            assert chain.headers["content-type"].startswith("application/pem-certificate-chain")
            leaf = x509.load_pem_x509_certificates(chain.content)[0]
            assert leaf.public_key() == key.public_key()
            # A second finalize (on A) finds the order done.
            twice = on_a.post(str(order["finalize"]), {"csr": b64url(csr_der(["localhost"], key))})
            assert problem_type(twice) == "orderNotReady"

            # An EAB key bound on A is spent for B too.
            made = a.eab_key()
            bound = RawClient(a, "eab")
            second = RawClient(type(a)(b_process, a.folder, a.root_file, a.http_port), "eab")
            try:
                assert bound.register_bound(made.kid, made.hmac_key).status_code == 201
                assert problem_type(second.register_bound(made.kid, made.hmac_key)) == (
                    "unauthorized"
                )
            finally:
                bound.close()
                second.close()
        finally:
            on_a.close()
            on_b.close()
            responder.close()
            b_process.stop()


def test_an_account_changed_on_one_replica_is_seen_on_the_other(
    ca_material: CAMaterial,
    provisioners: Provisioners,
    postgres_database_url: str,
    tmp_path: Path,
) -> None:
    """Each replica keeps the accounts it has seen (ostiary.acme.account_keys): a
    deactivation or a key change made on A must still be refused on B, whose copy is old.
    """
    with (
        fresh_postgres_schema(postgres_database_url) as url,
        serving_acme(ca_material, provisioners, tmp_path, database_url=url) as a,
    ):
        b_process = start_serve(
            a.folder, tmp_path / "b.log", options=("--acme-http-port", str(a.http_port))
        )
        b = type(a)(b_process, a.folder, a.root_file, a.http_port)
        leaving, rolling = RawClient(a), RawClient(a)
        leaving.register()
        rolling.register()
        leaving_b, rolling_b = leaving.on(b), rolling.on(b)
        try:
            for client in (leaving_b, rolling_b):  # B reads both accounts, and keeps them
                assert client.post(str(client.kid), None).status_code == 200

            gone = leaving.post(str(leaving.kid), {"status": "deactivated"})
            assert gone.json()["status"] == "deactivated"
            refused = leaving_b.post(leaving_b.directory["newOrder"], ORDER)
            assert problem_type(refused) == "unauthorized"
            assert "deactivated" in refused.json()["detail"]
            assert problem_type(leaving_b.post(str(leaving_b.kid), None)) == "unauthorized"

            new_key = ECKey.generate_key("P-256")
            changed = rolling.post(
                rolling.directory["keyChange"], key_change_inner(rolling, new_key)
            )
            assert changed.status_code == 200, changed.text
            old_key = rolling_b.post(rolling_b.directory["newOrder"], ORDER)
            assert problem_type(old_key) == "malformed"
            rolling_b.key = new_key
            assert rolling_b.post(rolling_b.directory["newOrder"], ORDER).status_code == 201
        finally:
            for client in (leaving, rolling, leaving_b, rolling_b):
                client.close()
            b_process.stop()
