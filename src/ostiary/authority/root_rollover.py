"""Replacing the root, with cross-certificates both ways (docs/lifecycle.md).

``ostiary ca root rotate`` makes a new self-signed root with a new key (an encrypted file in
``secrets/roots/KEYID.key``, like ``secrets/root.key``) and two cross-certificates:

- *new with old*: the new root's name and key, signed by the current newest root, so that a
  relying party that trusts only the old root reaches leaves under the new one;
- *old with new*: the old root's name and key, signed by the new root, so that one that
  trusts only the new root still reaches the old intermediate's leaves.

The new root keeps the old root's subject name (RFC 4210 section 4.4's key rollover
certificates): a cross-certificate is then *self-issued*, and does not count against the
old root's pathLenConstraint of 1 (with a new name, ``openssl verify`` refuses the path
old root, cross, intermediate, leaf as too long). Chains are told apart by key identifiers.

The files are ``certs/roots/KEYID.crt`` and ``certs/cross/SUBJECTKEYID-by-SIGNERKEYID.crt``;
the database records the new root as the *active* root and the old one as *retiring*, with
the audit event ``ca.root_rotated``. The existing intermediates stay valid under the old
root; ``ca intermediate rotate`` signs its new intermediate with the newest root.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import update

from ostiary.authority.folder import CAMaterial
from ostiary.authority.rollover import record_known_issuers
from ostiary.authority.root_crl import publish_root_crl
from ostiary.core.ca import (
    ROOT_LIFETIME,
    NameConstraints,
    create_intermediate_certificate,
    create_root_certificate,
    fingerprint_sha256,
    key_id_hex,
)
from ostiary.core.errors import BadRequest
from ostiary.core.keys import KeyType, generate_private_key
from ostiary.signers.base import Signer
from ostiary.signers.files import FileSigner
from ostiary.store import AuditLog, IssuerRecord, Store, record_issuer
from ostiary.store.issuers import ACTIVE, RETIRING

#: The audit event of a root rotation.
ROOT_ROTATED_EVENT = "ca.root_rotated"
#: The pathLenConstraint of every root and cross-certificate (root, intermediate, leaf).
ROOT_PATH_LENGTH = 1


@dataclass(frozen=True)
class RootRotation:
    """What ``ca root rotate`` made."""

    root: x509.Certificate
    #: The new root's name and key, signed by the old root.
    new_with_old: x509.Certificate
    #: The old root's name and key, signed by the new root.
    old_with_new: x509.Certificate


def cross_certify(
    subject: x509.Certificate,
    signer_certificate: x509.Certificate,
    signer: Signer,
    *,
    now: datetime,
    constraints: NameConstraints | None = None,
) -> x509.Certificate:
    """``subject``'s name and key as a CA certificate signed by ``signer_certificate``'s key
    (never outliving it), with the signer's key identifier as AKI.
    """
    return create_intermediate_certificate(
        subject.subject,
        subject.public_key(),  # type: ignore[arg-type]
        root_certificate=signer_certificate,
        root_key=signer.private_key,
        now=now,
        lifetime=subject.not_valid_after_utc - now,
        path_length=ROOT_PATH_LENGTH,
        name_constraints=constraints,
    )


def rotate_root(
    material: CAMaterial,
    store: Store,
    old_signer: Signer,
    *,
    key_type: KeyType,
    password: bytes,
    now: datetime,
    actor: str | None,
) -> RootRotation:
    """Make a new root and both cross-certificates with the newest root (see above).

    ``old_signer`` holds the newest root's key; ``password`` encrypts the new key file.
    """
    if material.config.kms == "pkcs11":
        raise BadRequest("root rotation of a PKCS#11 CA is not supported yet: keep its root")
    old = material.newest_root
    if old_signer.public_key() != old.public_key():
        raise BadRequest("the root key given does not match the newest root certificate")
    config = material.config
    constraints = NameConstraints(config.permitted_names, config.excluded_names)
    key = generate_private_key(key_type)
    new = create_root_certificate(
        old.subject,
        key,
        now=now,
        lifetime=ROOT_LIFETIME,
        path_length=ROOT_PATH_LENGTH,
        name_constraints=constraints,
    )
    new_signer = FileSigner(key, "new root")
    new_with_old = cross_certify(new, old, old_signer, now=now, constraints=constraints)
    old_with_new = cross_certify(old, new, new_signer, now=now, constraints=constraints)
    paths = material.paths
    new_id, old_id = key_id_hex(new), key_id_hex(old)
    paths.root_keys.mkdir(parents=True, exist_ok=True, mode=0o700)
    FileSigner.create(paths.rotated_root_key(new_id), key, password)
    paths.cross_certificates_dir.mkdir(parents=True, exist_ok=True)
    for certificate, name in (
        (new_with_old, f"{new_id}-by-{old_id}"),
        (old_with_new, f"{old_id}-by-{new_id}"),
    ):
        (paths.cross_certificates_dir / f"{name}.crt").write_bytes(_pem(certificate))
    paths.root_certificates_dir.mkdir(parents=True, exist_ok=True)
    (paths.root_certificates_dir / f"{new_id}.crt").write_bytes(_pem(new))
    with store.transaction() as session:
        record_known_issuers(session, material, now=now)
        session.execute(
            update(IssuerRecord)
            .where(IssuerRecord.kind == "root", IssuerRecord.state == ACTIVE)
            .values(state=RETIRING)
        )
        record_issuer(session, new, kind="root", state=ACTIVE, issuer_key_id=new_id, now=now)
        AuditLog(session).append(
            ROOT_ROTATED_EVENT,
            actor=actor,
            target=fingerprint_sha256(new),
            details={
                "key_id": new_id,
                "previous_key_id": old_id,
                "not_after": new.not_valid_after_utc.isoformat(),
                "cross_certificates": [
                    fingerprint_sha256(new_with_old),
                    fingerprint_sha256(old_with_new),
                ],
            },
            at=now,
        )
    # the CRL its intermediates will name (/crl/KEYID), made while its key is at hand
    publish_root_crl(material, store, new_signer, now=now, actor=actor, root=new)
    return RootRotation(new, new_with_old, old_with_new)


def root_bundle(material: CAMaterial) -> dict[str, list[str]]:
    """What ``/roots`` serves: every root (oldest first) and the cross-certificates, PEM.

    A client adopts a new root only through a cross-certificate signed by a root it trusts
    (:mod:`ostiary.client.root_trust`).
    """
    return {
        "roots": [_pem(root).decode("ascii") for root in material.roots],
        "cross_certificates": [
            _pem(cross).decode("ascii") for cross in material.paths.cross_certificates()
        ],
    }


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


__all__ = ["ROOT_ROTATED_EVENT", "RootRotation", "cross_certify", "root_bundle", "rotate_root"]
