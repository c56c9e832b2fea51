"""Opening the CA folder for a command: settings, the unlocked key, the migrated database.

Commands that only read (``ca requests list``, ``ca provisioner list``, ``ca key list``) or
record what needs no CA key (``ca officer add``) use :func:`open_ca_store`: the settings, the
public certificates and the database, never a key, so they ask for no password.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509

from ostiary.authority.authority import Authority
from ostiary.authority.folder import (
    CAMaterial,
    CAPaths,
    default_ca_dir,
    load_ca_folder,
    load_ca_public,
)
from ostiary.cli.secrets import obtain_password, obtain_pin
from ostiary.config import CAConfig, load_config
from ostiary.core.errors import BadRequest
from ostiary.provisioners.base import CAIdentity
from ostiary.store import Store, current_revision, head_revision, migrate

#: ``--password-file`` on a command that uses no key: accepted so that scripts may pass it
#: to every command alike, never read.
NoPasswordFile = Annotated[
    Path | None,
    typer.Option(
        "--password-file",
        "--pin-file",
        help="Accepted for uniform scripts; not needed (no key is used).",
        hidden=True,
    ),
]


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
        from ostiary.authority.token_ca import load_token_ca_folder, sealing_secret

        token = config.pkcs11.token if config.pkcs11 else "?"
        pin = obtain_pin(password_file, token=str(token))
        material = load_token_ca_folder(paths, pin)  # a wrong PIN stops here
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


@dataclass
class OpenCA:
    """A CA folder's settings, public certificates and database: no key."""

    paths: CAPaths
    config: CAConfig
    root: x509.Certificate
    intermediate: x509.Certificate
    store: Store

    @property
    def identity(self) -> CAIdentity:
        return CAIdentity.from_certificates(self.root, self.intermediate, claims=self.config.claims)


@contextmanager
def open_ca_store(directory: Path | None) -> Iterator[OpenCA]:
    """The CA folder without its key; the database must be migrated already."""
    paths = ca_paths(directory)
    if not paths.exists():
        raise BadRequest(f"no CA in {paths.root}: run 'ostiary ca init' first (or give --dir)")
    config, root, intermediate = load_ca_public(paths)
    store = Store.from_url(paths.database_url(config))
    try:
        if current_revision(store.engine) != head_revision():
            raise BadRequest("the database schema is not up to date: run 'ostiary ca migrate'")
        yield OpenCA(paths, config, root, intermediate, store)
    finally:
        store.dispose()
