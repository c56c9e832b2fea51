"""``ostiary ca root rotate``: a new root with cross-certificates both ways
(docs/lifecycle.md, :mod:`ostiary.authority.root_rollover`).
"""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from ostiary.authority.root_rollover import rotate_root
from ostiary.cli.console import note
from ostiary.cli.intermediate import NewKeyType
from ostiary.cli.options import CADir, PasswordFile
from ostiary.cli.unlock import unlock_ca
from ostiary.core.ca import fingerprint_sha256, key_id_hex
from ostiary.core.errors import BadRequest
from ostiary.core.keys import parse_key_type

root_app = typer.Typer(
    help="The root: rotate to a new one, cross-certified with the old.", no_args_is_help=True
)


@root_app.command("rotate")
def rotate(
    key_type: NewKeyType = None,
    directory: CADir = None,
    password_file: PasswordFile = None,
) -> None:
    """Make a new root (new key) and cross-certificates: new signed by old, old by new.

    The intermediates stay valid under the old root; 'ostiary ca intermediate rotate' then
    makes one under the new root. /roots serves every root and the cross-certificates.
    """
    with unlock_ca(directory, password_file) as ca:
        config = ca.material.config
        if config.kms == "pkcs11":
            raise BadRequest("root rotation of a PKCS#11 CA is not supported yet: keep its root")
        chosen = parse_key_type(key_type) if key_type else config.key_type
        old_signer = ca.material.load_newest_root_signer(ca.password)
        try:
            made = rotate_root(
                ca.material,
                ca.store,
                old_signer,
                key_type=chosen,
                password=ca.password,
                now=datetime.now(UTC),
                actor="cli",
            )
        finally:
            old_signer.close()
    note(f"New root: {made.root.subject.rfc4514_string()}")
    note(f"  key id:      {key_id_hex(made.root)}")
    note(f"  fingerprint: {fingerprint_sha256(made.root)}")
    note(f"  not_after:   {made.root.not_valid_after_utc:%Y-%m-%d %H:%M}Z")
    note(f"Cross-certificates in {ca.material.paths.cross_certificates_dir}")
    note(
        "Next: 'ostiary ca intermediate rotate' issues under the new root; clients learn it "
        "from /roots through the cross-certificate (docs/lifecycle.md)."
    )


__all__ = ["root_app"]
