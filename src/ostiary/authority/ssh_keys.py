"""The SSH CA keys: a user CA and a host CA, kept apart, in the CA folder.

::

    secrets/ssh_user_ca.key   encrypted PKCS#8 (as the X.509 keys), 0600
    secrets/ssh_host_ca.key
    certs/ssh_user_ca.pub     the public keys, as sshd's TrustedUserCAKeys and
    certs/ssh_host_ca.pub     known_hosts' @cert-authority lines take them

Two keys, so that a host certificate can never pass as a user certificate under a CA key
that hosts trust, nor the reverse. They open with the CA password. A PKCS#11 CA
(``kms = "pkcs11"``) makes them in its token instead, never extractable, labelled
``ostiary-ssh-user-ca`` and ``ostiary-ssh-host-ca`` (P-256, P-384 or RSA: tokens make no
Ed25519 keys); the ``.pub`` files are written either way and checked against the token's keys
when they are loaded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from ostiary.authority.folder import CAMaterial, CAPaths
from ostiary.core.errors import BadRequest, Conflict, MalformedInput
from ostiary.core.keys import KeyType, generate_private_key
from ostiary.signers.base import Signer
from ostiary.signers.files import FileSigner
from ostiary.ssh import SSHCertificateType, ca_public_key_line
from ostiary.ssh.wire import public_key_blob

if TYPE_CHECKING:
    from ostiary.signers.pkcs11 import Pkcs11Token

#: Key types an SSH CA key may have (RSA signs rsa-sha2-512).
SSH_CA_KEY_TYPES = (KeyType.ED25519, KeyType.P256, KeyType.P384, KeyType.RSA3072)


def _token_label(cert_type: SSHCertificateType) -> str:
    return f"ostiary-ssh-{cert_type.name.lower()}-ca"


def _key_file(paths: CAPaths, cert_type: SSHCertificateType) -> Path:
    return paths.root / "secrets" / f"ssh_{cert_type.name.lower()}_ca.key"


def ssh_ca_public_file(paths: CAPaths, cert_type: SSHCertificateType) -> Path:
    """``certs/ssh_user_ca.pub`` or ``certs/ssh_host_ca.pub``."""
    return paths.root / "certs" / f"ssh_{cert_type.name.lower()}_ca.pub"


def ssh_ca_exists(paths: CAPaths) -> bool:
    return ssh_ca_public_file(paths, SSHCertificateType.USER).exists()


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


_KINDS = (SSHCertificateType.USER, SSHCertificateType.HOST)


def init_ssh_ca(material: CAMaterial, password: bytes, key_type: KeyType) -> SSHCAKeys:
    """Make both SSH CA keys (files encrypted with the CA password, or in the CA's token)
    and their public files.
    """
    if key_type not in SSH_CA_KEY_TYPES:
        names = ", ".join(k.value for k in SSH_CA_KEY_TYPES)
        raise BadRequest(f"an SSH CA key is one of {names}, not {key_type.value}")
    paths = material.paths
    for kind in _KINDS:
        if _key_file(paths, kind).exists() or ssh_ca_public_file(paths, kind).exists():
            raise Conflict(f"the SSH CA keys exist already in {paths.root}: refusing to overwrite")
    token = _token_of(material)
    signers: list[Signer] = []
    for kind in _KINDS:
        if token is not None:
            signers.append(token.generate(_token_label(kind), key_type))
        else:
            key = generate_private_key(key_type)
            signers.append(FileSigner.create(_key_file(paths, kind), key, password))
    for kind, signer in zip(_KINDS, signers, strict=True):
        comment = f"ostiary-ssh-{kind.name.lower()}-ca"
        line = ca_public_key_line(signer.public_key(), comment)
        ssh_ca_public_file(paths, kind).write_text(line + "\n", encoding="ascii")
    return SSHCAKeys(user=signers[0], host=signers[1])


def load_ssh_ca(material: CAMaterial, password: bytes) -> SSHCAKeys | None:
    """Both SSH CA signers, or ``None`` when ``ca ssh init`` was never run."""
    paths = material.paths
    if not ssh_ca_exists(paths):
        return None
    token = _token_of(material)
    signers: list[Signer] = []
    for kind in _KINDS:
        if token is not None:
            signer: Signer = token.signer(_token_label(kind))
        else:
            signer = FileSigner.load(_key_file(paths, kind), password)
        published = ssh_ca_public_file(paths, kind).read_text(encoding="ascii").split()[:2]
        if ca_public_key_line(signer.public_key()).split() != published:
            raise MalformedInput(
                f"{ssh_ca_public_file(paths, kind)} is not the public half of the SSH "
                f"{kind.name.lower()} CA key"
            )
        signers.append(signer)
    return SSHCAKeys(user=signers[0], host=signers[1])


def _token_of(material: CAMaterial) -> Pkcs11Token | None:
    """The CA's open token session when its keys live in one, else None (key files)."""
    if material.config.kms != "pkcs11":
        return None
    from ostiary.signers.pkcs11 import Pkcs11Signer

    if not isinstance(material.signer, Pkcs11Signer):  # pragma: no cover - load_token_ca_folder
        raise BadRequest("this CA's issuing key is not in its token")
    return material.signer.token
