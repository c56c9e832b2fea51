"""``ostiary cert request`` with a token it cannot use: the answer says which CA, and what to do.

An expired token is refused before anything is sent; a refusal from the CA names the CA that
was asked (URL, root name and fingerprint), and says when the token was made on another CA.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from ostiary.authority.folder import CAPaths, load_ca_public
from ostiary.provisioners import CAIdentity, mint_sign_token
from ostiary.store import Store, sqlite_url_for
from tests.client.conftest import PASSWORD, PROVISIONER, RunningCA, ok, refused


def _token_made_at(ca: RunningCA, subject: str, now: datetime) -> str:
    """A token from ``ca``'s provisioner as minted at ``now`` (five minutes' validity)."""
    config, root, intermediate = load_ca_public(CAPaths(ca.home))
    store = Store.from_url(sqlite_url_for(ca.home / "ostiary.db"))
    try:
        return mint_sign_token(
            store,
            PROVISIONER,
            subject,
            ca=CAIdentity.from_certificates(root, intermediate, claims=config.claims),
            password=PASSWORD.encode(),
            now=now,
        )
    finally:
        store.dispose()


def test_token_from_another_ca_is_refused_naming_the_ca_asked(
    bootstrapped: RunningCA, own_ca: RunningCA, tmp_path: Path
) -> None:
    token = own_ca.token("alice")  # made by another CA than the one bootstrapped
    crt, key = tmp_path / "alice.crt", tmp_path / "alice.key"
    error = refused("cert", "request", "alice", crt, key, "--token", token).stderr
    assert "made by another CA" in error and "not signed with provisioner 'laptops'" in error
    assert bootstrapped.url in error
    assert "'Client Tests Root CA'" in error and bootstrapped.fingerprint[:16] in error
    assert own_ca.fingerprint[:16] in error
    assert not crt.exists() and not key.exists()
    ok("cert", "request", "alice", crt, key, "--token", bootstrapped.token("alice"))


def test_expired_token_says_to_make_a_new_one(bootstrapped: RunningCA, tmp_path: Path) -> None:
    token = _token_made_at(bootstrapped, "alice", datetime.now(UTC) - timedelta(hours=1))
    crt, key = tmp_path / "alice.crt", tmp_path / "alice.key"
    error = refused("cert", "request", "alice", crt, key, "--token", token).stderr
    assert "the token expired at" in error and "make a new one with 'ostiary ca token'" in error
    assert not crt.exists()


def test_refusal_from_the_ca_names_the_ca_that_refused(
    bootstrapped: RunningCA, tmp_path: Path
) -> None:
    bootstrapped.ca("provisioner", "add", "short-lived")
    token = bootstrapped.ca("token", "alice", "--provisioner", "short-lived").stdout.strip()
    bootstrapped.ca("provisioner", "remove", "short-lived")
    crt, key = tmp_path / "alice.crt", tmp_path / "alice.key"
    error = refused("cert", "request", "alice", crt, key, "--token", token).stderr
    assert error.startswith(f"error: the CA at {bootstrapped.url} (root 'Client Tests Root CA'")
    assert "refused the token: the token is from an unknown provisioner 'short-lived'" in error
