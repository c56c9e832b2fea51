"""Root rotation (``ca root rotate``, docs/lifecycle.md): a new root, cross-certificates both
ways, ``/roots`` serving the bundle on both listeners; a client that trusts only the old
root verifies a leaf under the new one through the cross-certificate (openssl and ``cert
verify``) and learns the new root only through it; a forged "new root" is not adopted.
One server for the module, on a CA rotated (root, then intermediate) before it starts.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from typer.testing import CliRunner

from ostiary.authority.authority import Authority
from ostiary.authority.folder import CAMaterial, load_ca_folder
from ostiary.authority.health import CrlState, ca_certificates, read_ca_crl
from ostiary.authority.rollover import rotate_intermediate
from ostiary.authority.root_crl import publish_root_crl
from ostiary.authority.root_rollover import RootRotation, cross_certify, rotate_root
from ostiary.cli.main import app
from ostiary.client.api import OstiaryClient, _chains_to
from ostiary.client.bootstrap import bootstrap_client_config
from ostiary.client.config import ROOTS_FILE, load_client_config
from ostiary.client.root_trust import adopt_roots
from ostiary.core.ca import create_root_certificate, fingerprint_sha256, key_id_hex
from ostiary.core.errors import BadRequest
from ostiary.core.issuance import Authorization, IssuingCA, issue_certificate
from ostiary.core.keys import KeyType, generate_private_key
from ostiary.core.names import parse_subject
from ostiary.signers.files import FileSigner
from ostiary.store import AuditEntry, IssuerRecord, Store
from ostiary.store.migrate import migrate
from tests.conftest import require_tool
from tests.server.conftest import (
    PASSWORD,
    Provisioners,
    Running,
    make_csr,
    material_for,
    run_server,
)


@dataclass
class Rotated:
    running: Running
    old_root: x509.Certificate
    made: RootRotation
    old_intermediate: x509.Certificate
    new_intermediate: x509.Certificate
    store: Store


@pytest.fixture(scope="module")
def rotated(
    ca_material: CAMaterial, provisioners: Provisioners, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Rotated]:
    folder = tmp_path_factory.mktemp("root-rollover") / "ca"
    url = f"sqlite:///{folder.parent / 'ca.db'}"
    migrate(url)
    store = Store.from_url(url)
    provisioners.record(store)
    material = material_for(ca_material, url, folder)
    now = datetime.now(UTC)
    signer = material.load_newest_root_signer(PASSWORD)
    made = rotate_root(
        material, store, signer, key_type=KeyType.P256, password=PASSWORD, now=now, actor="test"
    )
    publish_root_crl(material, store, signer, now=now, actor="test")  # /root.crl, as serve
    signer.close()
    assert material.newest_root == made.root
    signer = material.load_newest_root_signer(PASSWORD)  # now the new root's key
    new_intermediate = rotate_intermediate(
        material, store, signer, key_type=KeyType.P256, password=PASSWORD, now=now, actor="test"
    )
    signer.close()
    reloaded = replace(load_ca_folder(material.paths, PASSWORD), config=material.config)
    authority = Authority(reloaded, store)
    try:
        with run_server(authority, provisioners) as running:
            yield Rotated(
                running, material.root, made, material.intermediate, new_intermediate, store
            )
    finally:
        store.dispose()


def _pem(path: Path, *certificates: x509.Certificate) -> Path:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates))
    return path


def test_rotation_makes_a_new_root_and_cross_certificates_both_ways(rotated: Rotated) -> None:
    old, made = rotated.old_root, rotated.made
    new = made.root
    assert new.subject == old.subject and new.public_key() != old.public_key()
    assert new.issuer == new.subject  # self-signed
    for cross, subject, signer in ((made.new_with_old, new, old), (made.old_with_new, old, new)):
        assert cross.subject == subject.subject and cross.public_key() == subject.public_key()
        cross.verify_directly_issued_by(signer)
        aki = cross.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        assert aki.key_identifier == bytes.fromhex(key_id_hex(signer))
        assert cross.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        usage = cross.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.key_cert_sign and usage.crl_sign
        assert signer.not_valid_before_utc <= cross.not_valid_before_utc
        assert cross.not_valid_after_utc <= signer.not_valid_after_utc
    paths = rotated.running.authority.ca.paths
    assert paths.rotated_roots() == [new]
    assert sorted(paths.cross_certificates(), key=fingerprint_sha256) == sorted(
        [made.new_with_old, made.old_with_new], key=fingerprint_sha256
    )
    assert (paths.rotated_root_key(key_id_hex(new)).stat().st_mode & 0o777) == 0o600
    # the new intermediate was signed by the newest root; the old one stays under the old
    rotated.new_intermediate.verify_directly_issued_by(new)
    rotated.old_intermediate.verify_directly_issued_by(old)
    with rotated.store.transaction(read_only=True) as session:
        roots = {
            r.fingerprint_sha256: r.state
            for r in session.scalars(select(IssuerRecord).where(IssuerRecord.kind == "root"))
        }
        events = list(session.scalars(select(AuditEntry.event)))
    assert roots == {fingerprint_sha256(old): "retiring", fingerprint_sha256(new): "active"}
    assert "ca.root_rotated" in events


def test_a_client_trusting_only_the_old_root_verifies_a_new_leaf_through_the_cross_certificate(
    rotated: Rotated, tmp_path: Path
) -> None:
    authority = rotated.running.authority
    assert authority.issuer.certificate == rotated.new_intermediate
    leaf = leaf_of(authority.issuer, "CN=after the rotation")
    old_root = _pem(tmp_path / "old.pem", rotated.old_root)
    cross = _pem(tmp_path / "cross.pem", rotated.made.new_with_old)
    intermediate = _pem(tmp_path / "int.pem", rotated.new_intermediate)
    leaf_file = _pem(tmp_path / "leaf.pem", leaf)
    openssl = require_tool("openssl")

    def openssl_verify(*untrusted: Path) -> subprocess.CompletedProcess[str]:
        options = [a for u in untrusted for a in ("-untrusted", str(u))]
        command = [openssl, "verify", "-CAfile", str(old_root), *options, str(leaf_file)]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    assert openssl_verify(cross, intermediate).returncode == 0
    assert openssl_verify(intermediate).returncode != 0  # the cross-certificate is the link

    runner = CliRunner()
    verify = ["cert", "verify", str(leaf_file), "--roots", str(old_root)]
    result = runner.invoke(
        app, [*verify, "--untrusted", str(cross), "--untrusted", str(intermediate)]
    )
    assert result.exit_code == 0, result.output
    assert "OK (4 certificates" in result.output
    result = runner.invoke(app, [*verify, "--untrusted", str(intermediate)])
    assert result.exit_code == 1 and "does not verify" in result.output

    # and the other way: a client that has only the new root, a leaf of the old intermediate
    old_leaf = _pem(tmp_path / "old-leaf.pem", leaf_of(authority.ca.issuers[0], "CN=before"))
    new_root = _pem(tmp_path / "new.pem", rotated.made.root)
    back = _pem(tmp_path / "back.pem", rotated.made.old_with_new, rotated.old_intermediate)
    command = [openssl, "verify", "-CAfile", str(new_root), "-untrusted", str(back), str(old_leaf)]
    assert subprocess.run(command, capture_output=True, timeout=60).returncode == 0


def leaf_of(issuer: IssuingCA, subject: str) -> x509.Certificate:
    csr, _ = make_csr(subject)
    return issue_certificate(
        x509.load_pem_x509_csr(csr.encode()),
        Authorization(subject=parse_subject(subject), names=()),
        issuer,
        now=datetime.now(UTC),
    )


def test_roots_serves_every_root_and_the_cross_certificates_on_both_listeners(
    rotated: Rotated,
) -> None:
    made = rotated.made
    with rotated.running.client() as https, rotated.running.plain() as plain:
        for client in (https, plain):
            body = client.get("/roots").json()
            roots = [x509.load_pem_x509_certificate(p.encode()) for p in body["roots"]]
            cross = [x509.load_pem_x509_certificate(p.encode()) for p in body["cross_certificates"]]
            assert roots == [rotated.old_root, made.root]
            assert set(cross) == {made.new_with_old, made.old_with_new}
            found = client.get(f"/roots/{fingerprint_sha256(made.root)}")
            assert x509.load_pem_x509_certificate(found.content) == made.root


def test_bootstrap_learns_the_new_root_only_through_the_cross_certificate(
    rotated: Rotated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = rotated.running.server.https_url
    made = rotated.made
    config = bootstrap_client_config(url, fingerprint_sha256(rotated.old_root))
    assert config.root == rotated.old_root
    assert config.next_roots == (made.root,)
    assert config.cross_certificates == (made.new_with_old,)
    assert not config.refused_roots
    # a client bootstrapped on the new root learns the old one the same way
    back = bootstrap_client_config(url, fingerprint_sha256(made.root))
    assert back.next_roots == (rotated.old_root,)

    # A forged "new root" in the folder /roots reads (as a tampered or spoofed answer would
    # carry): one with no cross-certificate, one cross-certified by a key nobody trusts.
    now = datetime.now(UTC)
    paths = rotated.running.authority.ca.paths
    forged_key, other_key = generate_private_key(KeyType.P256), generate_private_key(KeyType.P256)
    forged = create_root_certificate(rotated.old_root.subject, forged_key, now=now)
    other = create_root_certificate(rotated.old_root.subject, other_key, now=now)
    by_unknown = cross_certify(other, forged, FileSigner(forged_key, "forged"), now=now)
    planted = [
        _pem(paths.root_certificates_dir / "ffff-forged.crt", forged),
        _pem(paths.root_certificates_dir / "ffff-other.crt", other),
        _pem(paths.cross_certificates_dir / "ffff-forged.crt", by_unknown),
    ]
    try:
        tampered = bootstrap_client_config(url, fingerprint_sha256(rotated.old_root))
    finally:
        for path in planted:
            path.unlink()
    assert tampered.next_roots == (made.root,)
    refusals = "\n".join(tampered.refused_roots)
    assert len(tampered.refused_roots) == 2
    assert f"{fingerprint_sha256(forged)[:16]}...) not adopted: no cross-certificate" in refusals
    assert f"{fingerprint_sha256(other)[:16]}...) not adopted: no valid cross-certificate" in (
        refusals
    )

    # What bootstrap saves; a root slipped into roots.pem later is not trusted either.
    folder = tmp_path / "client"
    monkeypatch.setenv("OSTIARY_CLIENT_CONFIG", str(folder))
    result = CliRunner().invoke(
        app, ["bootstrap", "--ca-url", url, "--fingerprint", fingerprint_sha256(rotated.old_root)]
    )
    assert result.exit_code == 0, result.output
    assert load_client_config(folder).trusted_roots == [rotated.old_root, made.root]
    with (folder / ROOTS_FILE).open("ab") as roots_file:
        roots_file.write(forged.public_bytes(serialization.Encoding.PEM))
    assert load_client_config(folder).trusted_roots == [rotated.old_root, made.root]


def test_adopt_roots_checks_the_cross_certificate_itself() -> None:
    now = datetime.now(UTC)
    old_key, new_key = generate_private_key(KeyType.P256), generate_private_key(KeyType.P256)
    name = x509.Name.from_rfc4514_string("CN=Adopt Root CA")
    old = create_root_certificate(name, old_key, now=now)
    new = create_root_certificate(name, new_key, now=now)
    good = cross_certify(new, old, FileSigner(old_key, "old"), now=now)
    assert adopt_roots([old], [old, new], [good], now=now).adopted == (new,)
    # expired by the time it is checked: refused
    later = now + timedelta(days=3651)
    assert adopt_roots([old], [new], [good], now=later).adopted == ()
    # a cross-certificate for another key with the same name does not vouch for this root
    third = create_root_certificate(name, generate_private_key(KeyType.P256), now=now)
    refused = adopt_roots([old], [third], [good], now=now)
    assert refused.adopted == () and "no cross-certificate carries its key" in refused.refused[0]


def test_crl_check_all_passes_through_the_cross_certificate(
    rotated: Rotated, tmp_path: Path
) -> None:
    """The new root's CRL (made at the rotation, served at /crl/KEYID, which intermediates
    under it name) lets ``openssl verify -crl_check_all`` check every link of the path.
    """
    made, authority = rotated.made, rotated.running.authority
    new_id = key_id_hex(made.root)
    with rotated.running.plain() as plain, rotated.running.client() as https:
        new_root_crl = plain.get(f"/crl/{new_id}").content
        assert https.get(f"/crl/{new_id}").content == new_root_crl
        intermediate_crl = plain.get(f"/crl/{key_id_hex(rotated.new_intermediate)}").content
        old_root_crl = plain.get("/root.crl").content
    assert x509.load_der_x509_crl(new_root_crl).is_signature_valid(made.root.public_key())

    def crl_file(name: str, *ders: bytes) -> Path:
        pems = (x509.load_der_x509_crl(d).public_bytes(serialization.Encoding.PEM) for d in ders)
        path = tmp_path / name
        path.write_bytes(b"".join(pems))
        return path

    every = crl_file("every.pem", new_root_crl, intermediate_crl, old_root_crl)
    without = crl_file("without.pem", intermediate_crl, old_root_crl)
    leaf = _pem(tmp_path / "leaf.pem", leaf_of(authority.issuer, "CN=checked"))
    old_root = _pem(tmp_path / "old.pem", rotated.old_root)
    new_root = _pem(tmp_path / "new.pem", made.root)
    cross = _pem(tmp_path / "cross.pem", made.new_with_old)
    intermediate = _pem(tmp_path / "int.pem", rotated.new_intermediate)

    def verify(root: Path, crls: Path, *untrusted: Path) -> subprocess.CompletedProcess[str]:
        options = [a for u in untrusted for a in ("-untrusted", str(u))]
        command = [
            require_tool("openssl"), "verify", "-crl_check_all", "-CRLfile", str(crls),
            "-CAfile", str(root), *options, str(leaf),
        ]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    result = verify(old_root, every, cross, intermediate)  # the old root's client
    assert result.returncode == 0, result.stderr
    result = verify(new_root, every, intermediate)  # the new root's client
    assert result.returncode == 0, result.stderr
    # without the new root's CRL, the new root's client cannot check the intermediate
    assert verify(new_root, without, intermediate).returncode != 0


def test_clients_of_the_old_root_follow_issuance_under_the_new_root(rotated: Rotated) -> None:
    """What the CA returns with a leaf carries the cross-certificate (how enrollment checks
    it), and the renew daemon's check of the current intermediate passes for a client that
    trusts only the old root.
    """
    authority, made = rotated.running.authority, rotated.made
    chain = authority.issuer.chain
    assert chain == (rotated.new_intermediate, made.new_with_old, made.root)
    leaf = leaf_of(authority.issuer, "CN=enrolled")
    assert _chains_to(leaf, chain, [rotated.old_root])
    assert not _chains_to(leaf, (rotated.new_intermediate, made.root), [rotated.old_root])
    with OstiaryClient(rotated.running.server.https_url, [rotated.old_root]) as client:
        assert client.current_issuer() == rotated.new_intermediate
        assert client.issuer_retiring(leaf_of(authority.ca.issuers[0], "CN=old"))


def test_a_token_ca_root_rotation_is_refused_and_changes_nothing(rotated: Rotated) -> None:
    material = rotated.running.authority.ca
    token_ca = replace(material, config=material.config.model_copy(update={"kms": "pkcs11"}))
    before = sorted(material.paths.root_certificates_dir.iterdir())
    signer = FileSigner(generate_private_key(KeyType.P256), "unused")
    with pytest.raises(BadRequest, match="PKCS#11 CA is not supported"):
        rotate_root(
            token_ca, rotated.store, signer, key_type=KeyType.P256, password=PASSWORD,
            now=datetime.now(UTC), actor="test",
        )  # fmt: skip
    assert sorted(material.paths.root_certificates_dir.iterdir()) == before


def test_crl_watch_bundles_the_new_root_learnt_through_the_cross_certificate(
    rotated: Rotated, tmp_path: Path
) -> None:
    """nginx/Mosquitto's files after a root rotation: given only the old root, crl-watch
    puts the new root (vouched for by the cross-certificate) and the new intermediate in the
    bundle, and the new root's CRL in the CRL file.
    """
    made = rotated.made
    old_root = _pem(tmp_path / "old.pem", rotated.old_root)
    bundle, crls = tmp_path / "bundle.pem", tmp_path / "crls.pem"
    result = CliRunner().invoke(
        app,
        [
            "ca", "crl-watch", "--once", "--ca-url", rotated.running.server.http_url, "--root",
            "--out", str(crls), "--ca-root", str(old_root), "--bundle-out", str(bundle),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    bundled = x509.load_pem_x509_certificates(bundle.read_bytes())
    assert bundled[:2] == [rotated.old_root, made.root]
    assert rotated.new_intermediate in bundled and rotated.old_intermediate in bundled
    text = crls.read_bytes().decode()
    listed = [
        x509.load_pem_x509_crl(("-----BEGIN X509 CRL-----" + part).encode())
        for part in text.split("-----BEGIN X509 CRL-----")[1:]
    ]
    assert len(listed) == 4  # two intermediates, two roots
    assert any(crl.is_signature_valid(made.root.public_key()) for crl in listed)


def test_status_watches_both_roots_after_a_rotation(rotated: Rotated) -> None:
    """``ca status`` and the health checks list the new root too, with its CRL path."""
    paths = rotated.running.authority.ca.paths
    listed = ca_certificates(paths, rotated.store, now=datetime.now(UTC))
    roots = [(c.key_id, c.crl_path, c.watched) for c in listed if c.role == "root"]
    new_id = key_id_hex(rotated.made.root)
    assert roots == [
        (key_id_hex(rotated.old_root), "/root.crl", True),
        (new_id, f"/crl/{new_id}", True),
    ]
    # Each root's CRL is read from its own file (the new root's is not the first's again).
    states = [read_ca_crl(c, paths, None, fetch=_no_fetch) for c in listed if c.role == "root"]
    assert [s.source for s in states] == [
        str(paths.root_crl),
        str(paths.root_certificates_dir / f"{new_id}.crl"),
    ]
    assert all(s.problem is None and s.number is not None for s in states)
    data = (paths.root_certificates_dir / f"{new_id}.crl").read_bytes()
    pem = data.lstrip().startswith(b"-----")
    new_crl = x509.load_pem_x509_crl(data) if pem else x509.load_der_x509_crl(data)
    assert new_crl.issuer == rotated.made.root.subject
    assert states[1].this_update == new_crl.last_update_utc


def _no_fetch(issuer: str, url: str) -> CrlState:
    raise AssertionError(f"a root's CRL is read from its file, not fetched ({url})")
