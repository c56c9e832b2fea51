"""``ostiary ca provisioner add NAME --type acme`` and ``ca serve``'s ACME validation options."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from ostiary.core.errors import MalformedInput
from ostiary.provisioners.acme_eab import open_eab_key
from ostiary.signers.sealing import Sealer
from ostiary.store import Store, sqlite_url_for
from tests.cli.conftest import CLI, ca_dir, cli, password_file  # noqa: F401 - fixtures


def test_an_acme_provisioner_is_added_with_its_profiles_and_challenges(
    cli: CLI,  # noqa: F811 - the fixture imported above
    ca_dir: Path,  # noqa: F811
    password_file: Path,  # noqa: F811
) -> None:
    added = cli.ok(
        "ca", "provisioner", "add", "web", "--type", "acme",
        "--challenges", "http-01", "--profiles", "client,server", "--default-profile", "server",
        "--names", "*.lab.example", "--max-lifetime", "7d",
        "--password-file", password_file,
    )  # fmt: skip
    assert "/acme/web/directory" in added.stderr + added.stdout
    listed = json.loads(cli.ok("ca", "provisioner", "list", "--format", "json").stdout)
    (web,) = [p for p in listed if p["name"] == "web"]
    assert web["type"] == "acme"
    assert web["profiles"] == ["client", "server"]
    assert web["claims"]["allowed_names"] == ["dns:*.lab.example"]
    assert web["claims"]["max_lifetime"] == "7d"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--challenges", "http-02"], "unknown challenge"),
        (["--profiles", "user"], "not allowed"),
        (["--profiles", "client", "--default-profile", "server"], "not allowed"),
        (["--challenges", "device-attest-01"], "--policy-oid"),
        (["--attestation-formats", "android-key"], "unknown attestation format"),
    ],
    ids=["fail/challenge", "fail/user-profile", "fail/default-not-offered",
         "fail/attest-without-oid", "fail/format"],
)  # fmt: skip
def test_a_wrong_acme_provisioner_is_refused_and_nothing_is_added(
    cli: CLI,  # noqa: F811
    ca_dir: Path,  # noqa: F811
    password_file: Path,  # noqa: F811
    options: list[str],
    message: str,
) -> None:
    refused = cli.refused(
        "ca", "provisioner", "add", "web", "--type", "acme", *options,
        "--password-file", password_file,
    )  # fmt: skip
    assert message in refused.stderr
    listed = json.loads(cli.ok("ca", "provisioner", "list", "--format", "json").stdout)
    assert [p for p in listed if p["name"] == "web"] == []


def test_acme_options_on_another_type_are_refused(
    cli: CLI,  # noqa: F811
    ca_dir: Path,  # noqa: F811
    password_file: Path,  # noqa: F811
) -> None:
    refused = cli.refused(
        "ca", "provisioner", "add", "ops", "--challenges", "http-01",
        "--password-file", password_file,
    )  # fmt: skip
    assert "acme provisioners" in refused.stderr


def test_a_bad_dns_resolver_address_is_refused(
    cli: CLI,  # noqa: F811
    ca_dir: Path,  # noqa: F811
    password_file: Path,  # noqa: F811
) -> None:
    refused = cli.refused(
        "ca", "serve", "--acme-dns-resolver", "no-port", "--password-file", password_file
    )
    assert "HOST:PORT" in refused.stderr


def test_eab_keys_are_shown_once_listed_without_the_key_and_removed(
    cli: CLI,  # noqa: F811
    ca_dir: Path,  # noqa: F811
    password_file: Path,  # noqa: F811
) -> None:
    added = cli.ok(
        "ca", "provisioner", "add", "web", "--type", "acme", "--require-eab",
        "--password-file", password_file,
    )  # fmt: skip
    assert "ca acme eab add --provisioner web" in added.stderr
    made = cli.ok(
        "ca", "acme", "eab", "add", "--provisioner", "web", "--names", "*.lab.example",
        "--password-file", password_file,
    )  # fmt: skip
    lines = dict(line.split(": ", 1) for line in made.stdout.strip().splitlines())
    kid, hmac_key = lines["kid"], lines["hmac-key"]
    assert len(base64.urlsafe_b64decode(hmac_key + "=")) == 32
    listed = cli.ok("ca", "acme", "eab", "list", "--format", "json").stdout
    (entry,) = json.loads(listed)
    assert entry["kid"] == kid
    assert entry["names"] == ["dns:*.lab.example"]
    assert entry["account"] is None
    # The key is in no listing, no audit entry and nowhere in the database in the clear.
    raw = base64.urlsafe_b64decode(hmac_key + "=")
    database = (ca_dir / "ostiary.db").read_bytes()
    assert hmac_key not in listed
    assert hmac_key.encode() not in database
    assert raw not in database
    assert kid.encode() in database  # the row and its audit entry are there

    # A new CA password re-seals the key: it opens with the new one, not the old one.
    new_password = ca_dir.parent / "new-password"
    new_password.write_text("another horse battery staple\n")
    changed = cli.ok(
        "ca", "password", "change", "--password-file", password_file,
        "--new-password-file", new_password,
    )  # fmt: skip
    assert "1 ACME EAB keys" in changed.stderr
    store = Store.from_url(sqlite_url_for(ca_dir / "ostiary.db"))
    try:
        opened = open_eab_key(store, Sealer(b"another horse battery staple"), "web", kid)
        assert opened == raw
        with pytest.raises(MalformedInput):
            open_eab_key(store, Sealer(password_file.read_bytes().strip()), "web", kid)
    finally:
        store.dispose()

    cli.refused("ca", "acme", "eab", "add", "--provisioner", "nope", "--password-file",
                password_file)  # fmt: skip
    cli.refused("ca", "acme", "eab", "remove", "no-such-kid", "--provisioner", "web")
    cli.ok("ca", "acme", "eab", "remove", kid, "--provisioner", "web")
    assert json.loads(cli.ok("ca", "acme", "eab", "list", "--format", "json").stdout) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ([], "exactly one of"),
        (["--serial", "1", "--all"], "exactly one of"),
        (["--serial", "abc123"], "no valid ACME certificate"),
        (["--issuer", "00" * 32], "not the SHA-256 fingerprint"),
        (["--all", "--provisioner", "nope"], "no ACME provisioner"),
        (["--all", "--spread", "30d"], "--spread"),
    ],
    ids=["fail/none", "fail/two", "fail/unknown-serial", "fail/issuer", "fail/provisioner",
         "fail/spread"],
)  # fmt: skip
def test_renew_early_refuses_what_names_nothing(
    cli: CLI,  # noqa: F811
    ca_dir: Path,  # noqa: F811
    options: list[str],
    message: str,
) -> None:
    refused = cli.refused("ca", "acme", "renew-early", *options)
    assert message in refused.stderr
