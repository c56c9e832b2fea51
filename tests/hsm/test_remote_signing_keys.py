"""Signing keys generated in a PKCS#11 token (SoftHSM2): assertions verify, the keys cannot
be exported, rotation stays in the token."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from ostiary.authority.authority import Authority
from ostiary.authority.remote_signing import Caller, RemoteSigning
from ostiary.authority.signing_keys import create_signing_key, rotate_signing_key
from ostiary.signers.pkcs11 import Pkcs11Token
from ostiary.signers.signing_keys import (
    FileSigningKeyStore,
    Pkcs11SigningKeyStore,
    SigningKeyStores,
)
from tests.hsm.conftest import PIN, SoftHSM
from tests.server.conftest import (  # noqa: F401 - fixtures
    authority,
    ca_material,
    provisioners,
)
from tests.signing.conftest import AUDIENCE, CLIENT_ID

TOKEN = "signer-threads"


@pytest.fixture
def token(softhsm: SoftHSM) -> Iterator[Pkcs11Token]:
    # A token the session's SoftHSM was initialized with (one made later is not seen by a
    # library already initialized in this process); our labels do not clash with its "ca".
    opened = Pkcs11Token.open(softhsm.module, TOKEN, PIN.encode())
    try:
        yield opened
    finally:
        opened.close()


@pytest.mark.parametrize(
    ("key_type", "algs"),
    [
        pytest.param("rsa-2048", ["PS256", "RS256"], id="ok/rsa"),
        pytest.param("p256", ["ES256"], id="ok/p256"),
    ],
)
def test_token_keys_sign_assertions_and_stay_in_the_token(
    authority: Authority,  # noqa: F811
    token: Pkcs11Token,
    tmp_path: Path,
    key_type: str,
    algs: list[str],
) -> None:
    name = f"tok-{key_type}-{tmp_path.name[-6:]}".lower().replace("_", "-")
    stores = SigningKeyStores(
        "pkcs11",
        {
            "pkcs11": Pkcs11SigningKeyStore(token),
            "file": FileSigningKeyStore(tmp_path / "files", b"pw"),
        },
    )
    version, certificate = create_signing_key(
        authority, stores, name, key_type=key_type, audiences=[AUDIENCE], callers=["cn:app"]
    )
    label = f"ostiary-signing-{name}-v1"
    assert (version.backend, version.key_ref) == ("pkcs11", f"pkcs11:object={label}")
    assert token.key_attributes(label)["extractable"] is False
    assert not (tmp_path / "files").exists()  # nothing written to disk

    signing = RemoteSigning(authority, stores)
    caller = Caller("certificate:1", ("cn:app",))
    for alg in algs:
        issued = signing.assertion(
            caller, name, client_id=CLIENT_ID, audience=AUDIENCE,
            lifetime=timedelta(minutes=5), source="127.0.0.1", alg=alg,
        )  # fmt: skip
        claims = jwt.decode(
            issued.assertion, key=certificate.public_key(), algorithms=[alg], audience=AUDIENCE
        )
        assert claims["iss"] == claims["sub"] == CLIENT_ID
    with pytest.raises(TypeError, match="cannot be exported"):
        stores.load(version.key_ref).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    # Rotation stays where the key lives, whatever the stores' default.
    second, _ = rotate_signing_key(authority, stores.using("file"), name)
    assert second.backend == "pkcs11"
    assert token.key_attributes(f"ostiary-signing-{name}-v2")["never_extractable"] is True


def test_a_server_without_the_token_refuses_token_keys_cleanly(tmp_path: Path) -> None:
    from ostiary.core.errors import BadRequest, SignerUnavailable

    files_only = SigningKeyStores("file", {"file": FileSigningKeyStore(tmp_path, b"pw")})
    with pytest.raises(SignerUnavailable):
        files_only.load("pkcs11:object=ostiary-signing-x-v1")
    with pytest.raises(BadRequest, match="PKCS#11 needs a CA whose keys are in a token"):
        files_only.using("pkcs11")
