"""``ostiary ca init --kms pkcs11``: the command-line side of CA keys in a PKCS#11 token.

python-pkcs11 is imported only when a token is used, so that file-key CAs and devices do
not load it.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from ostiary.authority.folder import CAMaterial, CAPaths
from ostiary.config import CAConfig, Pkcs11Settings
from ostiary.core.errors import BadRequest

KMS_CHOICES = ("file", "pkcs11")


def token_init_settings(
    kms: str, module: Path | None, token: str | None, prefix: str
) -> dict[str, Any]:
    """The ``kms``/``pkcs11`` settings of a new CA from the ``ca init`` options."""
    if kms not in KMS_CHOICES:
        raise BadRequest(f"unknown --kms {kms!r}: use 'file' or 'pkcs11'")
    if kms == "file":
        if module is not None or token is not None:
            raise BadRequest("--pkcs11-module and --token go with --kms pkcs11")
        return {}
    if module is None or token is None:
        raise BadRequest("--kms pkcs11 needs --pkcs11-module PATH and --token LABEL")
    module = module.expanduser().absolute()
    if not module.is_file():
        raise BadRequest(f"PKCS#11 module {module} does not exist")
    if not prefix:
        raise BadRequest("--key-label-prefix may not be empty")
    settings = Pkcs11Settings(
        module=str(module),
        token=token,
        root_key=f"{prefix}-root",
        intermediate_key=f"{prefix}-intermediate",
        sealing_key=f"{prefix}-seal",
    )
    return {"kms": "pkcs11", "pkcs11": settings}


def init_token_ca_folder(
    paths: CAPaths, config: CAConfig, pin: bytes, *, now: datetime
) -> CAMaterial:
    """:func:`ostiary.authority.token_ca.init_token_ca_folder`, imported on use."""
    from ostiary.authority.token_ca import init_token_ca_folder as init

    return init(paths, config, pin, now=now)
