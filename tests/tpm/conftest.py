"""A software TPM (swtpm) on loopback, a test attestation CA, and TPM keys made in it.

One swtpm per test session, its state in a temporary folder, reached through the TCTI
``swtpm:host=127.0.0.1,port=P``. Each test starts with no transient object in the TPM and
the dictionary-attack counter reset (tests enter wrong PINs on purpose).

The attestation CA stands for what an organisation runs to vouch for its devices' TPMs: it
certifies an attestation key (AK) only after checking, in the TPM, that the AK is a
restricted signing key bound to that TPM (``fixedTPM``, ``fixedParent``,
``sensitiveDataOrigin``) and that the TPM really holds it (TPM2_Certify of the AK by
itself over a fresh challenge, signature checked with the AK's public key).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ostiary.client.tpm import (
    AttestationKey,
    TpmPrivateKey,
    create_attestation_key,
    open_tpm,
)
from tests.conftest import require_tool
from tests.guides.markdown import parse_guide

with warnings.catch_warnings():
    # tpm2-pytss imports Camellia and CFB from their old places (deprecation warnings, which
    # the test settings make errors); import it once, quietly, as ostiary.client.tpm does.
    warnings.simplefilter("ignore")
    with contextlib.suppress(ImportError):
        import tpm2_pytss  # noqa: F401

#: The PIN of the test keys.
PIN = b"4711-pin"
#: The policy OID the test CA's attest provisioner adds ("hardware key, PIN-protected").
HARDWARE_POLICY = "1.3.6.1.4.1.55555.7.1"
#: The TPM's manufacturer, model and version, as an EK certificate's directoryName SAN has them.
TPM_NAME = x509.DirectoryName(
    x509.Name(
        [
            x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.1"), "id:4F535459"),
            x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.2"), "swtpm"),
            x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.3"), "id:20191023"),
        ]
    )
)


def _documented_openssl_config() -> str:
    """The ``tpm2.cnf`` docs/tpm.md shows for curl and nginx: the tests use that one."""
    guide = parse_guide(Path(__file__).parents[2] / "docs" / "tpm.md")
    (block,) = [b for b in guide.blocks if b.language == "ini" and "# tpm2.cnf" in b.text]
    return block.text


#: The OpenSSL configuration that loads the tpm2 provider, random numbers from the default
#: one (docs/tpm.md, for curl and nginx).
OPENSSL_TPM2_CONFIG = _documented_openssl_config()


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
        if port >= 65535:
            continue
        with socket.socket() as second:
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two free consecutive loopback ports")


@dataclass
class SoftwareTPM:
    port: int
    state: Path
    process: subprocess.Popen[bytes]

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def reset(self) -> None:
        """No transient objects left, and the dictionary-attack lockout cleared."""
        from tpm2_pytss import ESYS_TR, TPM2_CAP, TPM2_HT

        with open_tpm(self.tcti) as context:
            more = True
            while more:
                more, data = context.get_capability(
                    TPM2_CAP.HANDLES, int(TPM2_HT.TRANSIENT) << 24, 64
                )
                for handle in list(data.data.handles):
                    context.flush_context(context.tr_from_tpmpublic(handle))
            context.dictionary_attack_lock_reset(ESYS_TR.RH_LOCKOUT)

    def transient_count(self) -> int:
        from tpm2_pytss import TPM2_CAP, TPM2_HT

        with open_tpm(self.tcti) as context:
            _, data = context.get_capability(TPM2_CAP.HANDLES, int(TPM2_HT.TRANSIENT) << 24, 64)
            return int(data.data.handles.count)


@dataclass
class Manufacturer:
    """swtpm's local CA (swtpm-tools' swtpm_localca), standing for a TPM manufacturer: it
    signs the EK certificate that swtpm_setup writes into each test TPM's NV memory.
    """

    folder: Path

    @property
    def config(self) -> Path:
        return self.folder / "swtpm_setup.conf"

    def roots_pem(self) -> bytes:
        """The manufacturer's root and issuing certificates (what a CA is configured with)."""
        names = ("swtpm-localca-rootca-cert.pem", "issuercert.pem")
        return b"".join((self.folder / name).read_bytes() for name in names)


def _manufacturer(folder: Path) -> Manufacturer:
    localca = require_tool("swtpm_localca")
    (folder / "swtpm-localca.conf").write_text(
        f"statedir = {folder}\n"
        f"signingkey = {folder}/signkey.pem\n"
        f"issuercert = {folder}/issuercert.pem\n"
        f"certserial = {folder}/certserial\n"
    )
    (folder / "swtpm-localca.options").write_text(
        "--platform-manufacturer Ostiary\n--platform-version 2.1\n--platform-model test\n"
    )
    (folder / "swtpm_setup.conf").write_text(
        f"create_certs_tool = {localca}\n"
        f"create_certs_tool_config = {folder}/swtpm-localca.conf\n"
        f"create_certs_tool_options = {folder}/swtpm-localca.options\n"
        "active_pcr_banks = sha256\n"
    )
    return Manufacturer(folder)


#: One manufacturer and one broker per process. tests/ssh imports these fixtures, which makes
#: pytest hold a second definition of each; a second broker on a second session bus would be
#: unreachable from this process (GDBus keeps its first session-bus connection), and its TPM's
#: EK would come from another manufacturer. So a second definition gets the first's objects.
_PER_PROCESS: dict[str, Any] = {}


@pytest.fixture(scope="session")
def manufacturer(tmp_path_factory: pytest.TempPathFactory) -> Manufacturer:
    if "manufacturer" not in _PER_PROCESS:
        _PER_PROCESS["manufacturer"] = _manufacturer(tmp_path_factory.mktemp("manufacturer"))
    made: Manufacturer = _PER_PROCESS["manufacturer"]
    return made


def _manufacture(folder: Path, manufacturer: Manufacturer) -> None:
    """An RSA 2048 EK and its certificate in the new TPM's NV memory (under a second)."""
    setup = require_tool("swtpm_setup")
    result = subprocess.run(
        [setup, "--tpm2", "--tpmstate", str(folder), "--create-ek-cert", "--overwrite",
         "--config", str(manufacturer.config)],
        capture_output=True, check=False, timeout=60,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.fail(f"swtpm_setup failed: {(result.stdout + result.stderr)[-2000:]!r}")


def _start_swtpm(folder: Path, manufacturer: Manufacturer | None = None) -> SoftwareTPM:
    tool = require_tool("swtpm")
    if manufacturer is not None:
        _manufacture(folder, manufacturer)
    port = _free_port_pair()
    log = folder / "swtpm.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [
                tool,
                "socket",
                "--tpm2",
                "--tpmstate",
                f"dir={folder}",
                "--server",
                f"type=tcp,port={port},bindaddr=127.0.0.1",
                "--ctrl",
                f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
                "--flags",
                "not-need-init,startup-clear",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    _wait_for(lambda: _listens(port), process, log, "swtpm")
    return SoftwareTPM(port, folder, process)


def _listens(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _wait_for(ready: Any, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 60  # only a failing start waits this long
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            pytest.fail(f"{what} did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def swtpm_server(
    tmp_path_factory: pytest.TempPathFactory, manufacturer: Manufacturer
) -> Iterator[SoftwareTPM]:
    """swtpm reached directly: every test can see what transient objects are left. It has
    an EK certificate from ``manufacturer``, as a real TPM has from its maker.
    """
    tpm = _start_swtpm(tmp_path_factory.mktemp("swtpm"), manufacturer)
    try:
        yield tpm
    finally:
        _stop(tpm.process)


@pytest.fixture
def unstarted_tpm(tmp_path: Path) -> Iterator[SoftwareTPM]:
    """swtpm powered on but never sent TPM2_Startup (no startup-clear flag)."""
    port = _free_port_pair()
    log = tmp_path / "swtpm.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={tmp_path}",
             "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
             "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
             "--flags", "not-need-init"],
            stdout=subprocess.DEVNULL, stderr=log_file,
        )  # fmt: skip
    _wait_for(lambda: _listens(port), process, log, "swtpm")
    try:
        yield SoftwareTPM(port, tmp_path, process)
    finally:
        _stop(process)


@dataclass
class BrokeredTPM:
    """A second swtpm behind tpm2-abrmd (on a private D-Bus), as a TPM sits behind the
    kernel's resource manager (/dev/tpmrm0): tpm2-openssl needs more objects loaded at once
    than the TPM's three slots, and the broker swaps them.
    """

    tcti: str
    bus_address: str


@pytest.fixture(scope="session")
def brokered_tpm(
    tmp_path_factory: pytest.TempPathFactory, manufacturer: Manufacturer
) -> Iterator[BrokeredTPM]:
    shared = _PER_PROCESS.get("brokered")
    if shared is not None:  # started by the other definition of this fixture (see above)
        yield shared
        return
    for brokered in _brokered_tpm(tmp_path_factory, manufacturer):
        _PER_PROCESS["brokered"] = brokered
        try:
            yield brokered
        finally:
            _PER_PROCESS.pop("brokered", None)


def _brokered_tpm(
    tmp_path_factory: pytest.TempPathFactory, manufacturer: Manufacturer
) -> Iterator[BrokeredTPM]:
    dbus = require_tool("dbus-daemon")
    abrmd = shutil.which("tpm2-abrmd") or "/usr/sbin/tpm2-abrmd"
    if not Path(abrmd).is_file():
        require_tool("tpm2-abrmd")
    folder = tmp_path_factory.mktemp("brokered")
    state = folder / "state"
    state.mkdir()
    tpm = _start_swtpm(state, manufacturer)
    bus = folder / "bus"
    config = folder / "dbus.conf"
    config.write_text(_DBUS_CONFIG.format(path=bus))
    address = f"unix:path={bus}"
    name = f"com.intel.tss2.Tabrmd.ostiary{tpm.port}"
    processes: list[subprocess.Popen[bytes]] = [tpm.process]
    try:
        log = folder / "dbus.log"
        with log.open("wb") as out:
            bus_process = subprocess.Popen(
                [dbus, f"--config-file={config}", "--nofork"], stdout=out, stderr=out
            )
        processes.append(bus_process)
        _wait_for(bus.exists, bus_process, log, "dbus-daemon")
        log = folder / "abrmd.log"
        env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": address}
        with log.open("wb") as out:
            broker = subprocess.Popen(
                [
                    abrmd,
                    "--session",
                    "--allow-root",
                    f"--dbus-name={name}",
                    f"--tcti=swtpm:host=127.0.0.1,port={tpm.port}",
                ],
                stdout=out,
                stderr=out,
                env=env,
            )
        processes.append(broker)
        tcti = f"tabrmd:bus_name={name},bus_type=session"
        previous = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
        os.environ["DBUS_SESSION_BUS_ADDRESS"] = address  # the TCTI finds the bus here
        try:
            _wait_for(lambda: _answers(tcti), broker, log, "tpm2-abrmd")
            yield BrokeredTPM(tcti, address)
        finally:
            if previous is None:
                os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)
            else:
                os.environ["DBUS_SESSION_BUS_ADDRESS"] = previous
    finally:
        for process in reversed(processes):
            _stop(process)


def _answers(tcti: str) -> bool:
    from tpm2_pytss import TSS2_Exception

    from ostiary.core.errors import Unavailable

    try:
        with open_tpm(tcti) as context:
            context.get_random(4)
    except (Unavailable, TSS2_Exception):
        return False
    return True


_DBUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={path}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


@pytest.fixture
def swtpm(swtpm_server: SoftwareTPM) -> Iterator[SoftwareTPM]:
    swtpm_server.reset()
    yield swtpm_server
    swtpm_server.reset()


# --------------------------------------------------------------------------- attestation CA


@dataclass
class AttestationCA:
    """A root that certifies attestation keys after checking them in the TPM."""

    __test__ = False
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def certify_ak(
        self,
        ak: TpmPrivateKey,
        device: str,
        *,
        check_in_tpm: bool = True,
        names: tuple[x509.GeneralName, ...] = (),
        tpm_name: bool = True,
    ) -> x509.Certificate:
        """An AK certificate for ``device`` (a DNS SAN, ``names`` besides), naming the TPM
        as the EK certificate does (unless not ``tpm_name``), after checking the AK in its TPM.
        """
        if check_in_tpm:
            _check_attestation_key(ak)
        now = datetime.now(UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, device)]))
            .issuer_name(self.certificate.subject)
            .public_key(ak.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName(device), *names, *([TPM_NAME] if tpm_name else [])]
                ),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage([x509.ObjectIdentifier("2.23.133.8.3")]), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )


def _check_attestation_key(ak: TpmPrivateKey) -> None:
    """The AK is a restricted signing key bound to the TPM, and the TPM holds it."""
    from tpm2_pytss import TPMA_OBJECT
    from tpm2_pytss.types import TPMS_ATTEST, TPMT_PUBLIC

    from ostiary.client.tpm import AttestationKey as _AK
    from ostiary.client.tpm import certify_key

    public, _ = TPMT_PUBLIC.unmarshal(ak.public_area)
    required = (
        TPMA_OBJECT.FIXEDTPM
        | TPMA_OBJECT.FIXEDPARENT
        | TPMA_OBJECT.SENSITIVEDATAORIGIN
        | TPMA_OBJECT.RESTRICTED
        | TPMA_OBJECT.SIGN_ENCRYPT
    )
    if int(public.objectAttributes) & int(required) != int(required):
        raise AssertionError("not a restricted signing key bound to the TPM")
    challenge = secrets.token_urlsafe(24)
    statement = certify_key(ak, _AK(ak), challenge)
    attest, _ = TPMS_ATTEST.unmarshal(statement.attest)
    assert bytes(attest.extraData) == challenge.encode()
    assert bytes(attest.attested.certify.name) == bytes(public.get_name())
    _verify_tpm_signature(ak.public_key(), statement.attest, statement.signature)


def _verify_tpm_signature(key: ec.EllipticCurvePublicKey, data: bytes, signature: bytes) -> None:
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
    from tpm2_pytss.types import TPMT_SIGNATURE

    parsed, _ = TPMT_SIGNATURE.unmarshal(signature)
    ecdsa = parsed.signature.ecdsa
    der = encode_dss_signature(
        int.from_bytes(bytes(ecdsa.signatureR), "big"),
        int.from_bytes(bytes(ecdsa.signatureS), "big"),
    )
    key.verify(der, data, ec.ECDSA(hashes.SHA256()))


def make_attestation_ca(name: str = "Test TPM Attestation CA") -> AttestationCA:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return AttestationCA(certificate, key)


@pytest.fixture(scope="session")
def attestation_ca() -> AttestationCA:
    return make_attestation_ca()


@pytest.fixture
def attestation_key(swtpm: SoftwareTPM, attestation_ca: AttestationCA) -> AttestationKey:
    """An AK in the swtpm, certified for the device ``laptop-7.corp.example``."""
    ak = create_attestation_key(tcti=swtpm.tcti)
    certificate = attestation_ca.certify_ak(ak.key, "laptop-7.corp.example")
    return AttestationKey(ak.key, (certificate,))


def pem_chain(chain: Any) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
