"""Backups of a CA folder: one encrypted, checksummed archive, and a restore from it.

The archive holds ``ostiary.toml``, ``certs/``, ``secrets/`` (the key files, still encrypted
with the CA password; a PKCS#11 CA has none, its settings name the token and key labels and
the keys never leave it) and a consistent snapshot of the database (:mod:`ostiary.store.
snapshot`), as a tar whose ``manifest.json`` lists the SHA-256 of every member.

On disk::

    MAGIC | salt (16) | password check (32) | nonce (12) | AES-256-GCM(tar), MAGIC..nonce as AAD

The scrypt KDF turns the backup password and the salt into 64 bytes: the AES key and a check
value. A wrong password fails the check (constant-time compare) before any decryption; a
tampered or truncated archive fails GCM's tag. Nothing is written until the whole archive has
been decrypted and every checksum, and the audit chain of the snapshot, verify.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ostiary.authority.folder import CAPaths
from ostiary.config import CONFIG_FILE, dump_config, load_config
from ostiary.core.errors import BadRequest, Conflict, WrongPassword
from ostiary.signers.sealing import derive_sealing_key
from ostiary.store import (
    AuditLog,
    ReplicaRepository,
    Store,
    load_snapshot,
    migrate,
    snapshot_database,
)
from ostiary.store.database import sqlite_url_for

MAGIC = b"OSTIARY-BACKUP-1\n"
_SALT, _CHECK, _NONCE = 16, 32, 12
_HEADER = len(MAGIC) + _SALT + _CHECK + _NONCE
MANIFEST = "manifest.json"
DATABASE = "database.sqlite"
#: Folders of the CA folder copied whole (keys stay encrypted as they are on disk).
_FOLDERS = ("certs", "secrets")


@dataclass(frozen=True)
class BackupSummary:
    """What an archive holds, as its manifest says."""

    created: str
    revision: str | None
    files: tuple[str, ...]
    kms: str


def make_backup(paths: CAPaths, password: bytes) -> tuple[bytes, BackupSummary]:
    """The sealed archive of the CA folder and a snapshot of its database."""
    config = load_config(paths.config)
    members: dict[str, bytes] = {CONFIG_FILE: paths.config.read_bytes()}
    for folder in _FOLDERS:
        for path in sorted((paths.root / folder).rglob("*")):
            if path.is_file():
                members[path.relative_to(paths.root).as_posix()] = path.read_bytes()
    with _scratch() as scratch:
        revision = snapshot_database(paths.database_url(config), scratch / DATABASE)
        members[DATABASE] = (scratch / DATABASE).read_bytes()
    summary = BackupSummary(
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        revision=revision,
        files=tuple(sorted(members)),
        kms=config.kms,
    )
    manifest = {
        "created": summary.created,
        "revision": revision,
        "kms": config.kms,
        "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in members.items()},
    }
    members[MANIFEST] = json.dumps(manifest, indent=1, sort_keys=True).encode()
    return seal(_tar(members), password), summary


def restore_backup(
    archive: Path, password: bytes, directory: Path, *, database_url: str | None = None
) -> BackupSummary:
    """Recreate the CA folder of ``archive`` in the new ``directory``.

    The database goes into ``directory`` (SQLite) unless ``database_url`` names an empty
    database. Everything is checked before anything is written; a failure leaves no folder.
    """
    if directory.exists() and any(directory.iterdir()):
        raise Conflict(f"{directory} is not empty: restore into a new folder")
    try:
        sealed = archive.read_bytes()
    except OSError as exc:
        raise BadRequest(f"cannot read the archive {archive}: {exc.strerror}") from None
    members = _untar(open_sealed(sealed, password))
    summary = _check_manifest(members)
    with _scratch() as scratch:
        snapshot = scratch / DATABASE
        snapshot.write_bytes(members[DATABASE])
        migrate(sqlite_url_for(snapshot))  # an archive from an older version: bring it up
        _verify_audit_chain(sqlite_url_for(snapshot))
        _forget_replicas(sqlite_url_for(snapshot))
        staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
        try:
            _write_folder(staging, members, snapshot, database_url)
            if database_url is not None:
                load_snapshot(snapshot, database_url)
            if directory.exists():
                directory.rmdir()
            staging.rename(directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return summary


def seal(plain: bytes, password: bytes) -> bytes:
    """Encrypt ``plain`` under ``password``: the archive format above."""
    salt, nonce = os.urandom(_SALT), os.urandom(_NONCE)
    key, check = _derive(password, salt)
    header = MAGIC + salt + check + nonce
    return header + AESGCM(key).encrypt(nonce, plain, header)


def open_sealed(sealed: bytes, password: bytes) -> bytes:
    """Decrypt an archive, or say in one line why not (not one, wrong password, damaged)."""
    if not sealed.startswith(MAGIC):
        raise BadRequest("not an Ostiary backup archive (or its start is damaged)")
    if len(sealed) < _HEADER + 16:
        raise BadRequest("the archive is truncated")
    header = sealed[:_HEADER]
    salt = header[len(MAGIC) : len(MAGIC) + _SALT]
    stored_check = header[len(MAGIC) + _SALT : len(MAGIC) + _SALT + _CHECK]
    key, check = _derive(password, salt)
    if not hmac.compare_digest(check, stored_check):
        raise WrongPassword("wrong password for this backup archive")
    try:
        return AESGCM(key).decrypt(header[-_NONCE:], sealed[_HEADER:], header)
    except InvalidTag:
        raise BadRequest(
            "the archive is damaged (truncated or altered): it fails its checksum"
        ) from None


def _derive(password: bytes, salt: bytes) -> tuple[bytes, bytes]:
    derived = derive_sealing_key(password, salt, length=64)
    return derived[:32], derived[32:]


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _untar(data: bytes) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for info in tar.getmembers():
            extracted = tar.extractfile(info) if info.isfile() else None
            if extracted is None or not _safe_name(info.name):
                raise BadRequest(f"the archive holds an unexpected entry {info.name!r}")
            members[info.name] = extracted.read()
    return members


def _safe_name(name: str) -> bool:
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts


def _check_manifest(members: dict[str, bytes]) -> BackupSummary:
    try:
        manifest = json.loads(members.pop(MANIFEST))
        expected: dict[str, str] = manifest["sha256"]
    except (KeyError, ValueError, TypeError):
        raise BadRequest("the archive has no readable manifest") from None
    if set(expected) != set(members) or DATABASE not in members or CONFIG_FILE not in members:
        raise BadRequest("the archive's files differ from its manifest")
    for name, data in members.items():
        if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), expected[name]):
            raise BadRequest(f"{name} in the archive fails its checksum")
    return BackupSummary(
        created=str(manifest.get("created")),
        revision=manifest.get("revision"),
        files=tuple(sorted(members)),
        kms=str(manifest.get("kms")),
    )


def _verify_audit_chain(url: str) -> None:
    store = Store.from_url(url)
    try:
        with store.transaction(read_only=True) as session:
            verification = AuditLog(session).verify()
    finally:
        store.dispose()
    if not verification.ok:
        raise Conflict("the audit chain in the archive does not verify: not restoring it")


def _forget_replicas(url: str) -> None:
    """Drop the heartbeat rows: which servers ran when the snapshot was taken is not the
    restored CA's state (``ca status`` would list them as silent replicas).
    """
    store = Store.from_url(url)
    try:
        with store.transaction() as session:
            ReplicaRepository(session).remove_all()
    finally:
        store.dispose()


def _write_folder(
    root: Path, members: dict[str, bytes], snapshot: Path, database_url: str | None
) -> None:
    root.chmod(0o700)
    paths = CAPaths(root)
    for name, data in members.items():
        if name in (DATABASE, CONFIG_FILE):
            continue
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_private(target, data)
    (root / CONFIG_FILE).write_bytes(members[CONFIG_FILE])
    config = load_config(paths.config).model_copy(update={"database_url": database_url})
    paths.config.write_text(dump_config(config), encoding="utf-8")
    if database_url is None:
        shutil.copyfile(snapshot, paths.database)
        paths.database.chmod(0o600)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


@contextmanager
def _scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ostiary-backup-") as folder:
        yield Path(folder)
