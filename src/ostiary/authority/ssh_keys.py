"""The SSH CA keys: a user CA and a host CA, kept apart, in the CA folder.

::

    secrets/ssh_user_ca.key   encrypted PKCS#8 (as the X.509 keys), 0600
    secrets/ssh_host_ca.key
    certs/ssh_user_ca.pub     the public keys, as sshd's TrustedUserCAKeys and
    certs/ssh_host_ca.pub     known_hosts' @cert-authority lines take them

Two keys, so that a host certificate can never pass as a user certificate under a CA key
that hosts trust, nor the reverse. They open with the CA password. A PKCS#11 CA
(``kms = "pkcs11"``) keeps its SSH CA keys in files too (docs/ssh.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from ostiary.authority.folder import CAPaths
from ostiary.core.errors import BadRequest, Conflict
from ostiary.core.keys import KeyType, generate_private_key
from ostiary.signers.base import Signer
from ostiary.signers.files import FileSigner
from ostiary.ssh import SSHCertificateType, ca_public_key_line
from ostiary.ssh.wire import public_key_blob

#: Key types an SSH CA key may have (RSA signs rsa-sha2-512).
SSH_CA_KEY_TYPES = (KeyType.ED25519, KeyType.P256, KeyType.P384, KeyType.RSA3072)


def _key_file(paths: CAPaths, cert_type: SSHCertificateType) -> Path:
    return paths.root / "secrets" / f"ssh_{cert_type.name.lower()}_ca.key"


def ssh_ca_public_file(paths: CAPaths, cert_type: SSHCertificateType) -> Path:
    """``certs/ssh_user_ca.pub`` or ``certs/ssh_host_ca.pub``."""
    return paths.root / "certs" / f"ssh_{cert_type.name.lower()}_ca.pub"


def ssh_ca_exists(paths: CAPaths) -> bool:
    return _key_file(paths, SSHCertificateType.USER).exists()


def ca_key_sha256(key: PublicKeyTypes) -> str:
    """Hex SHA-256 of a CA key's SSH blob: how records name the CA that signed them."""
    return hashlib.sha256(public_key_blob(key)).hexdigest()


@dataclass(frozen=True)
class SSHCAKeys:
    """The two SSH CA signers."""

    user: Signer
    host: Signer

    def signer_for(self, cert_type: SSHCertificateType) -> Signer:
        return self.user if cert_type is SSHCertificateType.USER else self.host

    def close(self) -> None:
        self.user.close()
        self.host.close()


def init_ssh_ca(paths: CAPaths, password: bytes, key_type: KeyType) -> SSHCAKeys:
    """Make both SSH CA keys (encrypted with the CA password) and their public files."""
    if key_type not in SSH_CA_KEY_TYPES:
        names = ", ".join(k.value for k in SSH_CA_KEY_TYPES)
        raise BadRequest(f"an SSH CA key is one of {names}, not {key_type.value}")
    kinds = (SSHCertificateType.USER, SSHCertificateType.HOST)
    for kind in kinds:
        if _key_file(paths, kind).exists() or ssh_ca_public_file(paths, kind).exists():
            raise Conflict(f"the SSH CA keys exist already in {paths.root}: refusing to overwrite")
    signers = []
    for kind in kinds:
        signer = FileSigner.create(_key_file(paths, kind), generate_private_key(key_type), password)
        comment = f"ostiary-ssh-{kind.name.lower()}-ca"
        line = ca_public_key_line(signer.public_key(), comment)
        ssh_ca_public_file(paths, kind).write_text(line + "\n", encoding="ascii")
        signers.append(signer)
    return SSHCAKeys(user=signers[0], host=signers[1])


def load_ssh_ca(paths: CAPaths, password: bytes) -> SSHCAKeys | None:
    """Both SSH CA signers, or ``None`` when ``ca ssh init`` was never run."""
    if not ssh_ca_exists(paths):
        return None
    return SSHCAKeys(
        user=FileSigner.load(_key_file(paths, SSHCertificateType.USER), password),
        host=FileSigner.load(_key_file(paths, SSHCertificateType.HOST), password),
    )
