"""The CLI side of ``attest`` provisioners (``ca provisioner add --type attest``)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.serialization import Encoding

from ostiary.cli.console import note
from ostiary.cli.files import read_input
from ostiary.core.encoding import load_certificate_chain
from ostiary.core.errors import BadRequest, Unauthorized

if TYPE_CHECKING:  # the device commands import this module: no store at start-up
    from ostiary.provisioners.base import ProvisionerClaims
    from ostiary.store import Store

#: The provisioner type (as :data:`ostiary.provisioners.attest.ATTEST_TYPE`, without the import).
ATTEST_TYPE = "attest"


def add_attest(
    store: Store,
    name: str,
    *,
    claims: ProvisionerClaims,
    ca_claims: ProvisionerClaims,
    profile: str,
    roots_file: Path | None,
    policy_oids: list[str] | None,
    require_pin: bool,
    now: datetime,
    actor: str,
) -> None:
    """Record an ``attest`` provisioner from the CLI's options."""
    from ostiary.provisioners.attest import AttestProvisioner, add_attest_provisioner

    if roots_file is None:
        raise BadRequest("an attest provisioner needs --attestation-roots FILE (PEM)")
    if not policy_oids or len(policy_oids) != 1:
        raise BadRequest(
            "an attest provisioner needs exactly one --policy-oid: the OID its certificates "
            "carry for 'key held in hardware, PIN-protected'"
        )
    roots = load_certificate_chain(read_input(roots_file, "attestation roots"))
    pem = b"".join(c.public_bytes(Encoding.PEM) for c in roots).decode("ascii")
    provisioner = AttestProvisioner(
        name=name,
        roots_pem=pem,
        policy_oid=policy_oids[0],
        claims=claims,
        require_pin=require_pin,
        profile=profile,
    )
    add_attest_provisioner(store, provisioner, now=now, ca_claims=ca_claims, actor=actor)
    note(f"Added provisioner '{name}' (type {ATTEST_TYPE}, profile {profile})")
    note(f"  attestation roots: {', '.join(c.subject.rfc4514_string() for c in roots)}")
    note(f"  policy OID: {policy_oids[0]}")
    note("  verified: the key was made in a TPM and is bound to it, attested by its AK")
    if require_pin:
        note(
            "  the key must allow a PIN (userWithAuth); that one is set is the client's "
            "promise: no TPM can attest it (docs/tpm.md)"
        )
    else:
        note("  the key need not allow a PIN (--no-require-pin)")


def check_attest_provisioner(store: Store, name: str) -> None:
    """Refuse ``--require-attestation NAME`` unless NAME is an ``attest`` provisioner."""
    from ostiary.provisioners.attest import load_attest_provisioner

    try:
        load_attest_provisioner(store, name)
    except Unauthorized:
        raise BadRequest(
            f"--require-attestation {name!r}: there is no attest provisioner of that name"
        ) from None
