"""Changing the CA password: every key it seals, re-encrypted, and never half a CA.

The CA password seals the key files under ``secrets/`` (root, intermediate, remote-signing
keys), and in the database the private keys of ``jwk`` provisioners and the HMAC keys of
unbound ACME External Account Binding keys. A change:

1. opens every one of them with the old password (a wrong one changes nothing);
2. writes each key file anew as ``NAME.key.new`` under the new password, and opens it again
   to check it holds the same key (the old files stay until then);
3. re-seals the provisioner keys and EAB keys in one database transaction, with an audit
   entry;
4. moves each ``.new`` file over its original (one atomic rename per file).

A crash between two steps leaves every single file whole, each sealed by the old or by the new
password, so the CA opens with one of the two. Running the same change again finishes it: a
key that already opens with the new password is taken as changed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from ostiary.authority.folder import CAPaths
from ostiary.core.errors import BadRequest, MalformedInput, WrongPassword
from ostiary.signers.files import decrypt_private_key_pem, encrypt_private_key_pem
from ostiary.signers.sealing import Sealer
from ostiary.store import AcmeEabKey, AcmeEabRepository, AuditLog, ProvisionerRepository, Store

NEW_SUFFIX = ".new"
#: The config field in which a provisioner keeps a private key sealed by the CA password.
SEALED_KEY = "encrypted_key"


@dataclass(frozen=True)
class PasswordChange:
    """What a change re-sealed: key files and provisioner keys, by name."""

    key_files: tuple[str, ...]
    provisioners: tuple[str, ...]
    eab_keys: tuple[str, ...] = ()


def change_password(
    paths: CAPaths, store: Store, old: bytes, new: bytes, *, now: datetime, actor: str
) -> PasswordChange:
    """Re-seal every key of the CA folder ``paths`` and its database under ``new``."""
    if old == new:
        raise BadRequest("the new password is the old one: nothing to change")
    files = {
        path: _open_key(path.read_bytes(), old, new, where=str(path.relative_to(paths.root)))
        for path in sorted((paths.root / "secrets").rglob("*.key"))
    }
    provisioner_keys = _open_provisioner_keys(store, old, new)
    eab_keys = _open_eab_keys(store, old, new)
    to_write = {path: key for path, key in files.items() if key is not None}
    try:
        for path, key in to_write.items():
            _write_checked(_new_file(path), key, new)
        _reseal_provisioners(store, provisioner_keys, eab_keys, new, now=now, actor=actor)
    except BaseException:
        for path in to_write:
            _new_file(path).unlink(missing_ok=True)
        raise
    for path in to_write:  # from here on, no cleanup: each rename is whole, and a rerun resumes
        os.replace(_new_file(path), path)
    _sync_folder(paths.root / "secrets")
    return PasswordChange(
        key_files=tuple(str(p.relative_to(paths.root)) for p in to_write),
        provisioners=tuple(provisioner_keys),
        eab_keys=tuple(eab_keys),
    )


def _new_file(path: Path) -> Path:
    return path.with_name(path.name + NEW_SUFFIX)


def _open_key(data: bytes, old: bytes, new: bytes, *, where: str) -> PrivateKeyTypes | None:
    """The key sealed by ``old``; None if ``new`` already seals it (a change resumed)."""
    try:
        return decrypt_private_key_pem(data, old)
    except WrongPassword:
        pass
    try:
        decrypt_private_key_pem(data, new)
    except WrongPassword:
        raise WrongPassword(f"wrong password: it does not open {where}; nothing changed") from None
    return None


def _write_checked(path: Path, key: PrivateKeyTypes, password: bytes) -> None:
    sealed = encrypt_private_key_pem(key, password)
    if _public_der(decrypt_private_key_pem(sealed, password)) != _public_der(key):
        raise BadRequest(f"{path.name}: the re-encrypted key does not read back; nothing changed")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(sealed)
        handle.flush()
        os.fsync(handle.fileno())
    if _public_der(decrypt_private_key_pem(path.read_bytes(), password)) != _public_der(key):
        raise BadRequest(f"{path.name} does not read back from disk; nothing changed")


def _open_provisioner_keys(store: Store, old: bytes, new: bytes) -> dict[str, PrivateKeyTypes]:
    """The provisioner keys still sealed by ``old``, by provisioner name."""
    keys: dict[str, PrivateKeyTypes] = {}
    with store.transaction(read_only=True) as session:
        for record in ProvisionerRepository(session).list():
            sealed = record.config.get(SEALED_KEY)
            if not isinstance(sealed, str):
                continue
            where = f"the key of provisioner {record.name!r}"
            key = _open_key(sealed.encode("ascii"), old, new, where=where)
            if key is not None:
                keys[record.name] = key
    return keys


def _open_eab_keys(store: Store, old: bytes, new: bytes) -> dict[str, bytes]:
    """The HMAC keys of unbound EAB keys still sealed by ``old``, by key id (a bound key's
    HMAC key is wiped when it binds: it is never verified again).
    """
    keys: dict[str, bytes] = {}
    with store.transaction(read_only=True) as session:
        for row in AcmeEabRepository(session).of_provisioner(None):
            if row.account_id is not None or not row.sealed_key:
                continue
            associated = row.kid.encode("ascii")
            try:
                keys[row.kid] = Sealer(old).open(row.sealed_key, associated=associated)
                continue
            except MalformedInput:
                pass
            try:
                Sealer(new).open(row.sealed_key, associated=associated)
            except MalformedInput:
                raise WrongPassword(
                    f"wrong password: it does not open EAB key {row.kid}; nothing changed"
                ) from None
    return keys


def _reseal_provisioners(
    store: Store,
    keys: dict[str, PrivateKeyTypes],
    eab_keys: dict[str, bytes],
    new: bytes,
    *,
    now: datetime,
    actor: str,
) -> None:
    with store.transaction() as session:
        repository = ProvisionerRepository(session)
        for name, key in keys.items():
            record = repository.get(name)
            encrypted = encrypt_private_key_pem(key, new).decode("ascii")
            repository.update(name, config={**record.config, SEALED_KEY: encrypted}, now=now)
        sealer = Sealer(new)
        for kid, hmac_key in eab_keys.items():
            row = session.get(AcmeEabKey, kid)
            if row is not None:
                row.sealed_key = sealer.seal(hmac_key, associated=kid.encode("ascii"))
        AuditLog(session).append(
            "ca.password_changed",
            at=now,
            actor=actor,
            details={"provisioners": sorted(keys), "eab_keys": sorted(eab_keys)},
        )


def _public_der(key: PrivateKeyTypes) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _sync_folder(folder: Path) -> None:
    """Make the renames durable (a directory fsync; not available on Windows)."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
