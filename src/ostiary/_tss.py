"""``tpm2_pytss``, imported on first use by the TPM client and the ``attest`` provisioner.

It links the system's TSS (``libtss2``) and warns at import about cipher names that
cryptography moved (Camellia, CFB); both callers want it quietly and only when a TPM is
actually involved, with one clear error when the ``tpm`` extra is missing.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from ostiary.core.errors import BadRequest


def import_tss(needed_for: str) -> Any:
    """The ``tpm2_pytss`` package (with its ``tsskey`` module loaded).

    The TSS logs every TPM error to stderr (``ERROR:esys:...``, ``WARNING:tcti:...``); we
    turn each into one error of ours, so its log stays off unless ``TSS2_LOG`` asks for it.
    """
    os.environ.setdefault("TSS2_LOG", "all+none")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import tpm2_pytss
            import tpm2_pytss.tsskey
    except ImportError:
        raise BadRequest(
            f"{needed_for} needs the 'tpm' extra: pip install 'ostiary[tpm]' (and libtss2)"
        ) from None
    return tpm2_pytss
