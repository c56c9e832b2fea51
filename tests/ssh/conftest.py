"""A CA server with SSH CA keys for the SSH tests, and helpers to get certificates from it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.client.conftest import PASSWORD, PROVISIONER, RunningCA, ok
from tests.ssh.sshd import new_key

#: Issues user and host certificates.
RESTRICTED = "restricted"  # user certificates with source-address 192.0.2.0/24


@dataclass
class SSHCA:
    """The running CA plus the SSH helpers the tests share."""

    ca: RunningCA

    @property
    def user_ca(self) -> Path:
        return self.ca.home / "certs" / "ssh_user_ca.pub"

    @property
    def host_ca(self) -> Path:
        return self.ca.home / "certs" / "ssh_host_ca.pub"

    def token(self, *principals: str, host: bool = False, provisioner: str = PROVISIONER) -> str:
        args: list[str | Path] = ["token", "--ssh", "--provisioner", provisioner]
        for principal in principals:
            args += ["--principal", principal]
        if host:
            args.append("--host")
        return self.ca.ca(*args).stdout.strip()

    def client_args(self) -> list[str | Path]:
        return ["--ca-url", self.ca.url, "--root", self.ca.root_file]

    def certificate(
        self,
        folder: Path,
        *principals: str,
        host: bool = False,
        provisioner: str = PROVISIONER,
        name: str = "id",
    ) -> tuple[Path, Path]:
        """A new key in ``folder`` and its certificate from the CA: (key, certificate)."""
        public = new_key(folder / name)
        token = self.token(*principals, host=host, provisioner=provisioner)
        args: list[str | Path] = ["ssh", "certificate", public, "--token", token]
        if host:
            args.append("--host")
        ok(*args, *self.client_args())
        return folder / name, folder / f"{name}-cert.pub"


@pytest.fixture(scope="session")
def ssh_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHCA]:
    folder = tmp_path_factory.mktemp("ssh-ca")
    password_file = folder / "password"
    password_file.write_text(PASSWORD + "\n")
    ca = RunningCA(folder / "ca", password_file)
    ca.init()
    ca.ca("ssh", "init")
    ca.ca("ssh", "policy", PROVISIONER, "--host")
    ca.ca("provisioner", "add", RESTRICTED)
    ca.ca("ssh", "policy", RESTRICTED, "--option", "source-address=192.0.2.0/24")
    ca.start()
    try:
        yield SSHCA(ca)
    finally:
        ca.stop()
