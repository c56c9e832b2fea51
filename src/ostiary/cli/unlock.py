"""Opening the CA folder for a command: settings, the unlocked key, the migrated database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ostiary.authority.authority import Authority
from ostiary.authority.folder import (
    CAMaterial,
    CAPaths,
    default_ca_dir,
    load_ca_folder,
    load_ca_public,
)
from ostiary.cli.secrets import PIN_ENV, obtain_password
from ostiary.config import load_config
from ostiary.core.errors import BadRequest
from ostiary.store import Store, migrate


def ca_paths(directory: Path | None) -> CAPaths:
    """The CA folder named by ``--dir``, else ``$OSTIARY_HOME``, else ``~/.ostiary``."""
    return CAPaths((directory or default_ca_dir()).expanduser())


@dataclass
class UnlockedCA:
    """A CA folder with its issuing key unlocked and its database open.

    ``password`` is kept for the few commands that seal or unseal more secrets with it
    (provisioner keys, the root key for the root CRL); it is never printed or logged.
    """

    material: CAMaterial
    store: Store
    password: bytes = field(repr=False)

    @cached_property
    def authority(self) -> Authority:
        return Authority(self.material, self.store)


@contextmanager
def unlock_ca(directory: Path | None, password_file: Path | None) -> Iterator[UnlockedCA]:
    """Load the CA folder, unlock its key, open (and migrate) its database."""
    paths = ca_paths(directory)
    if not paths.exists():
        raise BadRequest(f"no CA in {paths.root}: run 'ostiary ca init' first (or give --dir)")
    config = load_config(paths.config)
    if config.kms == "pkcs11":  # the secret is the token's PIN (docs/hsm.md)
        from ostiary.authority.token_ca import sealing_secret

        token = config.pkcs11.token if config.pkcs11 else "?"
        pin = obtain_password(password_file, purpose=f"token {token!r}", env=PIN_ENV)
        material = load_ca_folder(paths, pin)  # a wrong PIN stops here
        password = sealing_secret(material)  # provisioner keys are sealed with this
    else:
        password = obtain_password(password_file, purpose=f"the CA key in {paths.root}")
        material = load_ca_folder(paths, password)  # a wrong password stops here
    migrate(material.database_url)
    store = Store.from_url(material.database_url)
    try:
        yield UnlockedCA(material, store, password)
    finally:
        store.dispose()
        material.signer.close()  # a token session (kms = "pkcs11"); nothing for a file


@contextmanager
def open_ca_store(directory: Path | None) -> Iterator[Store]:
    """The CA folder's database (migrated), without unlocking any key: for reading."""
    paths = ca_paths(directory)
    if not paths.exists():
        raise BadRequest(f"no CA in {paths.root}: run 'ostiary ca init' first (or give --dir)")
    config, _, _ = load_ca_public(paths)
    url = paths.database_url(config)
    migrate(url)
    store = Store.from_url(url)
    try:
        yield store
    finally:
        store.dispose()
