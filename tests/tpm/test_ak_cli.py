"""``ostiary tpm ak create``: an attestation key our checks accept, with no handle left behind."""

from __future__ import annotations

from pathlib import Path

from ostiary.client.tpm import AttestationKey, load_tpm_key_pem
from tests.client.conftest import ok, refused
from tests.tpm.conftest import AttestationCA, SoftwareTPM


def test_ak_create_makes_a_restricted_signing_key_the_attestation_ca_certifies(
    swtpm: SoftwareTPM, attestation_ca: AttestationCA, tmp_path: Path
) -> None:
    from tpm2_pytss import TPMA_OBJECT
    from tpm2_pytss.tsskey import TSSPrivKey

    out = tmp_path / "ak.pem"
    ok("tpm", "ak", "create", "--out", out, "--tcti", swtpm.tcti)
    data = out.read_bytes()
    assert data.startswith(b"-----BEGIN TSS2 PRIVATE KEY-----")
    assert out.stat().st_mode & 0o777 == 0o600
    blob = TSSPrivKey.from_pem(data)
    assert blob.empty_auth  # no PIN, and the file says so
    attributes = int(blob.public.publicArea.objectAttributes)
    for flag in ("RESTRICTED", "SIGN_ENCRYPT", "FIXEDTPM", "FIXEDPARENT", "SENSITIVEDATAORIGIN"):
        assert attributes & int(getattr(TPMA_OBJECT, flag)), flag
    assert not attributes & int(TPMA_OBJECT.DECRYPT)
    assert swtpm.transient_count() == 0
    # Loadable under the standard primary, certifies itself in the TPM (the CA's check).
    ak = load_tpm_key_pem(data, tcti=swtpm.tcti, pin=None)
    certificate = attestation_ca.certify_ak(ak, "laptop-7.corp.example")
    assert AttestationKey(ak, (certificate,)).chain[0].public_key() == ak.public_key()
    assert swtpm.transient_count() == 0


def test_ak_create_refuses_to_overwrite_and_names_an_unreachable_tpm(
    swtpm: SoftwareTPM, tmp_path: Path
) -> None:
    out = tmp_path / "ak.pem"
    out.write_text("keep me")
    result = refused("tpm", "ak", "create", "--out", out, "--tcti", swtpm.tcti)
    assert "exists already" in result.stderr
    assert out.read_text() == "keep me"
    fresh = tmp_path / "fresh.pem"
    result = refused("tpm", "ak", "create", "--out", fresh, "--tcti", "swtpm:host=127.0.0.1,port=1")
    assert not fresh.exists()
    assert swtpm.transient_count() == 0
