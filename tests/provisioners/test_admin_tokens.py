"""Admin tokens: short-lived, reusable, and only from provisioners made with ``--admin``."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ostiary.core.errors import BadRequest, Unauthorized
from ostiary.provisioners import (
    CAIdentity,
    JWKProvisioner,
    authorize_sign,
    mint_admin_token,
    verify_admin_token,
)

from .conftest import PASSWORD, Kit, make_csr


@pytest.fixture
def admins(kit: Kit) -> JWKProvisioner:
    return kit.add_provisioner("admins", admin=True)


def admin_claims(kit: Kit, **changes: object) -> dict[str, object]:
    issued = int(kit.now.timestamp())
    claims: dict[str, object] = {
        "iss": "admins",
        "aud": kit.identity.audience("admin"),
        "sub": "admin",
        "iat": issued,
        "nbf": issued,
        "exp": issued + 300,
    }
    claims.update(changes)
    return claims


def admin_token(kit: Kit, admins: JWKProvisioner, **changes: object) -> str:
    return kit.token(
        admin_claims(kit, **changes),
        header=kit.header(kid=admins.kid),
        key=admins.load_private_key(PASSWORD),
    )


def test_an_admin_token_names_its_actor_and_may_be_used_again(
    kit: Kit, admins: JWKProvisioner
) -> None:
    token = mint_admin_token(kit.store, "admins", ca=kit.identity, password=PASSWORD, now=kit.now)
    for _ in range(2):
        assert verify_admin_token(kit.store, token, ca=kit.identity, now=kit.now) == "admin@admins"


def test_a_non_admin_provisioner_cannot_mint_admin_tokens(kit: Kit) -> None:
    with pytest.raises(BadRequest, match="not an admin provisioner"):
        mint_admin_token(kit.store, "ci", ca=kit.identity, password=PASSWORD, now=kit.now)


def test_a_non_admin_provisioner_admin_token_is_refused(kit: Kit) -> None:
    token = kit.token(admin_claims(kit, iss="ci"))
    with pytest.raises(Unauthorized, match="not an admin provisioner"):
        verify_admin_token(kit.store, token, ca=kit.identity, now=kit.now)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param(
            {"aud": CAIdentity(root_fingerprint="01" * 32).audience("admin")}, id="fail/other-ca"
        ),
        pytest.param({"sub": "root"}, id="fail/other-subject"),
        pytest.param({"iss": "nobody"}, id="fail/unknown-provisioner"),
        pytest.param({"exp": 1}, id="fail/expired"),
        pytest.param({"exp": 2_000_000_000_000}, id="fail/lifetime-over-an-hour"),
    ],
)
def test_bad_admin_tokens_are_refused(
    kit: Kit, admins: JWKProvisioner, changes: dict[str, object]
) -> None:
    token = admin_token(kit, admins, **changes)
    with pytest.raises(Unauthorized):
        verify_admin_token(kit.store, token, ca=kit.identity, now=kit.now)


def test_a_sign_token_is_no_admin_token(kit: Kit, admins: JWKProvisioner) -> None:
    sign_token = admins.mint_sign_token(
        admins.load_private_key(PASSWORD), "host.lab.example", ca=kit.identity, now=kit.now
    )
    with pytest.raises(Unauthorized, match="another audience"):
        verify_admin_token(kit.store, sign_token, ca=kit.identity, now=kit.now)


def test_an_admin_token_is_no_sign_token(kit: Kit, admins: JWKProvisioner) -> None:
    token = admin_token(kit, admins, jti="j" * 22)
    with pytest.raises(Unauthorized, match="another audience"):
        authorize_sign(kit.store, token, make_csr(), ca=kit.identity, now=kit.now)


def test_admin_tokens_live_at_most_an_hour(kit: Kit, admins: JWKProvisioner) -> None:
    with pytest.raises(BadRequest):
        admins.mint_admin_token(
            admins.load_private_key(PASSWORD),
            ca=kit.identity,
            now=kit.now,
            ttl=timedelta(hours=2),
        )
