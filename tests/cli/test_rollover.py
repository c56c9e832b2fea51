"""Intermediate rollover and revocation on a CA folder (docs/lifecycle.md).

One CA folder per test; ``ca intermediate rotate`` / ``list`` and ``ca revoke
--intermediate`` run as commands; what the server publishes (CRLs per intermediate, OCSP,
the root CRL) is read from the server's own objects in this process, and checked with
``openssl verify`` and ``openssl ocsp``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from ostiary.authority.authority import Authority
from ostiary.authority.folder import CAPaths, load_ca_folder
from ostiary.authority.rollover import reload_issuers
from ostiary.core.ca import fingerprint_sha256, key_id_hex
from ostiary.core.encoding import format_serial, load_certificate_chain
from ostiary.server.context import ServerContext
from ostiary.store import Store
from tests.cli.conftest import CLI, PASSWORD
from tests.conftest import require_tool

MakeCSR = Callable[..., tuple[Path, Path]]


def _sign(
    cli: CLI, make_csr: MakeCSR, tmp_path: Path, name: str, password_file: Path
) -> list[x509.Certificate]:
    csr, _ = make_csr(name)
    out = tmp_path / f"{name}.crt"
    cli.ok("ca", "sign", csr, "--out", out, "--password-file", password_file)
    return load_certificate_chain(out.read_bytes())


@contextmanager
def _server_objects(ca_dir: Path) -> Iterator[ServerContext]:
    material = load_ca_folder(CAPaths(ca_dir), PASSWORD.encode())
    store = Store.from_url(material.database_url)
    try:
        yield ServerContext.for_authority(Authority(material, store))
    finally:
        store.dispose()


def _ocsp(
    context: ServerContext, leaf: x509.Certificate, issuer: x509.Certificate
) -> ocsp.OCSPResponse:
    request = (
        ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1()).build()
    ).public_bytes(serialization.Encoding.DER)
    return ocsp.load_der_ocsp_response(context.ocsp.respond(request))


def _pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def test_rotation_moves_issuance_and_the_old_intermediate_keeps_answering_for_its_leaves(
    cli: CLI,
    ca_dir: Path,
    password_file: Path,
    make_csr: MakeCSR,
    tmp_path: Path,
) -> None:
    openssl = require_tool("openssl")
    old_leaf, old_intermediate = _sign(cli, make_csr, tmp_path, "before", password_file)[:2]
    listed = json.loads(cli.ok("ca", "intermediate", "list", "--format", "json").stdout)
    assert [i["state"] for i in listed] == ["active"]

    cli.ok("ca", "intermediate", "rotate", "--key-type", "p384", "--password-file", password_file)
    new_leaf, new_intermediate = _sign(cli, make_csr, tmp_path, "after", password_file)[:2]
    assert new_intermediate != old_intermediate
    assert new_leaf.issuer == new_intermediate.subject
    new_leaf.verify_directly_issued_by(new_intermediate)
    assert new_intermediate.public_key().curve.name == "secp384r1"  # type: ignore[union-attr]
    new_id = key_id_hex(new_intermediate)
    cdp = new_leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert cdp[0].full_name[0].value == f"http://ca.test:8080/crl/{new_id}"  # type: ignore[index]

    listed = json.loads(cli.ok("ca", "intermediate", "list", "--format", "json").stdout)
    states = {i["fingerprint_sha256"]: i["state"] for i in listed}
    assert states == {
        fingerprint_sha256(old_intermediate): "retiring",
        fingerprint_sha256(new_intermediate): "active",
    }
    table = cli.ok("ca", "intermediate", "list").stdout
    assert "retiring" in table and "active" in table

    # The old intermediate's leaf is still revocable; its own CRL and OCSP show it.
    cli.ok(
        "ca", "revoke", format_serial(old_leaf.serial_number), "--reason", "superseded",
        "--password-file", password_file,
    )  # fmt: skip
    with _server_objects(ca_dir) as context:
        assert context.authority.issuer.certificate == new_intermediate
        old_crl = x509.load_der_x509_crl(context.crl_of(key_id_hex(old_intermediate)).current().der)  # type: ignore[union-attr]
        new_crl = x509.load_der_x509_crl(context.crl_of(new_id).current().der)  # type: ignore[union-attr]
        assert old_crl.is_signature_valid(old_intermediate.public_key())  # type: ignore[arg-type]
        assert new_crl.is_signature_valid(new_intermediate.public_key())  # type: ignore[arg-type]
        assert old_crl.get_revoked_certificate_by_serial_number(old_leaf.serial_number)
        assert new_crl.get_revoked_certificate_by_serial_number(old_leaf.serial_number) is None
        revoked = _ocsp(context, old_leaf, old_intermediate)
        good = _ocsp(context, new_leaf, new_intermediate)
        assert revoked.certificate_status == ocsp.OCSPCertStatus.REVOKED
        assert good.certificate_status == ocsp.OCSPCertStatus.GOOD
    # openssl agrees: each leaf verifies through its own intermediate; the revoked one fails.
    root = x509.load_pem_x509_certificate((ca_dir / "certs/root.crt").read_bytes())
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(_pem(root, old_intermediate, new_intermediate))
    crls = tmp_path / "crls.pem"
    crls.write_bytes(
        old_crl.public_bytes(serialization.Encoding.PEM)
        + new_crl.public_bytes(serialization.Encoding.PEM)
    )
    leaf_files = {}
    for name, leaf in (("old", old_leaf), ("new", new_leaf)):
        leaf_files[name] = tmp_path / f"{name}-leaf.pem"
        leaf_files[name].write_bytes(_pem(leaf))
    verify = [openssl, "verify", "-crl_check", "-CAfile", bundle, "-CRLfile", crls]
    assert subprocess.run([*verify, leaf_files["new"]], capture_output=True).returncode == 0
    failed = subprocess.run([*verify, leaf_files["old"]], capture_output=True, text=True)
    assert failed.returncode != 0 and "revoked" in failed.stdout + failed.stderr


def test_a_revoked_intermediate_is_on_the_root_crl_and_its_leaves_fail_crl_check_all(
    cli: CLI,
    ca_dir: Path,
    password_file: Path,
    make_csr: MakeCSR,
    tmp_path: Path,
) -> None:
    openssl = require_tool("openssl")
    old_leaf, old_intermediate = _sign(cli, make_csr, tmp_path, "before", password_file)[:2]
    fingerprint = fingerprint_sha256(old_intermediate)
    # The issuing intermediate cannot be revoked: nothing could be issued after.
    refused = cli.refused(
        "ca", "revoke", "--intermediate", fingerprint, "--password-file", password_file
    )
    assert "rotate" in refused.stderr
    cli.refused("ca", "revoke", "--intermediate", "ab" * 32, "--password-file", password_file)
    cli.ok("ca", "intermediate", "rotate", "--password-file", password_file)
    new_leaf, new_intermediate = _sign(cli, make_csr, tmp_path, "after", password_file)[:2]
    cli.ok(
        "ca", "revoke", "--intermediate", fingerprint.upper(), "--reason", "key-compromise",
        "--password-file", password_file,
    )  # fmt: skip
    again = cli.refused(
        "ca", "revoke", "--intermediate", fingerprint, "--password-file", password_file
    )
    assert "already" in again.stderr
    listed = json.loads(cli.ok("ca", "intermediate", "list", "--format", "json").stdout)
    assert {i["state"] for i in listed} == {"revoked", "active"}

    root = x509.load_pem_x509_certificate((ca_dir / "certs/root.crt").read_bytes())
    with _server_objects(ca_dir) as context:
        root_der = context.root_crl.current()
        assert root_der is not None
        crls = [
            x509.load_der_x509_crl(root_der),
            x509.load_der_x509_crl(context.crl_of(key_id_hex(old_intermediate)).current().der),  # type: ignore[union-attr]
            x509.load_der_x509_crl(context.crl_of(key_id_hex(new_intermediate)).current().der),  # type: ignore[union-attr]
        ]
        # OCSP about the intermediates, signed by the root (made with the root CRL).
        about_old = _ocsp(context, old_intermediate, root)
        about_new = _ocsp(context, new_intermediate, root)
    assert about_old.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert about_old.revocation_reason == x509.ReasonFlags.key_compromise
    assert about_new.certificate_status == ocsp.OCSPCertStatus.GOOD
    for answer in (about_old, about_new):
        assert not answer.certificates  # signed by the root itself
        root.public_key().verify(  # type: ignore[call-arg, union-attr]
            answer.signature,
            answer.tbs_response_bytes,
            ec.ECDSA(answer.signature_hash_algorithm),  # type: ignore[arg-type]
        )
    entry = crls[0].get_revoked_certificate_by_serial_number(old_intermediate.serial_number)
    assert entry is not None
    assert crls[0].is_signature_valid(root.public_key())  # type: ignore[arg-type]
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(_pem(root, old_intermediate, new_intermediate))
    crl_file = tmp_path / "crls.pem"
    crl_file.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in crls))
    verify = [openssl, "verify", "-crl_check_all", "-CAfile", bundle, "-CRLfile", crl_file]
    old_file, new_file = tmp_path / "old.pem", tmp_path / "new.pem"
    old_file.write_bytes(_pem(old_leaf))
    new_file.write_bytes(_pem(new_leaf))
    failed = subprocess.run([*verify, old_file], capture_output=True, text=True)
    assert failed.returncode != 0 and "revoked" in failed.stdout + failed.stderr
    passed = subprocess.run([*verify, new_file], capture_output=True, text=True)
    assert passed.returncode == 0, passed.stdout + passed.stderr


def test_a_running_server_follows_a_rotation_and_survives_a_missing_key(
    cli: CLI, ca_dir: Path, password_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The server's audit watch sees a rotation made elsewhere and switches; when this
    replica's folder lacks the new key it says so and keeps watching (and issuing)."""
    with _server_objects(ca_dir) as context:
        material = context.authority.ca
        context.follow_rotations(lambda: reload_issuers(material, PASSWORD.encode()))
        watch = context.ocsp.watch
        watch.poll()  # where the log stands
        first = context.authority.issuer.certificate
        cli.ok("ca", "intermediate", "rotate", "--password-file", password_file)
        key_file = next((ca_dir / "secrets" / "intermediates").glob("*.key"))
        moved = key_file.rename(key_file.with_suffix(".away"))
        watch.poll()
        assert context.authority.issuer.certificate == first
        assert "cannot switch to the new intermediate" in caplog.text
        moved.rename(key_file)
        cli.ok("ca", "intermediate", "rotate", "--password-file", password_file)
        watch.poll()
        listed = json.loads(cli.ok("ca", "intermediate", "list", "--format", "json").stdout)
        (active,) = [i["key_id"] for i in listed if i["state"] == "active"]
        newest = context.authority.issuers[active].certificate
        assert context.authority.issuer.certificate == newest
        assert newest in context.ca.issuers
