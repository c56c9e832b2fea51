"""Learning a CA's next root through a cross-certificate (docs/lifecycle.md).

After ``ostiary ca root rotate``, ``/roots`` lists the new root beside the old one, with the
cross-certificates between them. A client never trusts a root because a server listed it:
:func:`adopt_roots` keeps a new root only if a cross-certificate carries exactly its name
and key, is a valid CA certificate now (basicConstraints CA, keyUsage keyCertSign), and is
signed by a root the client trusts already. So ``/roots`` may be fetched without TLS
verification (as ``ostiary bootstrap`` does before it has a root), and a forged "new root"
is refused with a reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509

from ostiary.core.ca import fingerprint_sha256, issued_by


@dataclass(frozen=True)
class RootAdoption:
    """What :func:`adopt_roots` decided: roots adopted (with the cross-certificates that
    vouched for them), and one line per root refused.
    """

    adopted: tuple[x509.Certificate, ...] = ()
    cross_certificates: tuple[x509.Certificate, ...] = ()
    refused: tuple[str, ...] = field(default=())


def adopt_roots(
    trusted: Sequence[x509.Certificate],
    offered: Sequence[x509.Certificate],
    cross_certificates: Sequence[x509.Certificate],
    *,
    now: datetime,
) -> RootAdoption:
    """The offered roots that a cross-certificate from a trusted root vouches for.

    A root adopted counts as trusted for the next (a chain of rotations); roots already
    trusted are skipped silently.
    """
    known = {fingerprint_sha256(root) for root in trusted}
    anchors = [root for root in trusted if _valid_ca(root, now)]
    pending = [root for root in offered if fingerprint_sha256(root) not in known]
    adopted: list[x509.Certificate] = []
    used: list[x509.Certificate] = []
    progress = True
    while pending and progress:
        progress = False
        for root in list(pending):
            voucher = _voucher(root, anchors, cross_certificates, now)
            if voucher is None:
                continue
            pending.remove(root)
            adopted.append(root)
            used.append(voucher)
            anchors.append(root)
            progress = True
    refused = tuple(_refusal(root, cross_certificates) for root in pending)
    return RootAdoption(tuple(adopted), tuple(used), refused)


def cross_anchors(
    trusted: Sequence[x509.Certificate],
    candidates: Sequence[x509.Certificate],
    *,
    now: datetime,
) -> list[x509.Certificate]:
    """The cross-certificates among ``candidates`` that a trusted root signed (valid CA
    certificates now): what a verifier that trusts only the old root may start a chain from
    (``ostiary cert verify --untrusted``). pyca/cryptography's path builder does not follow a
    cross-certificate that carries its root's name, so the signature to the old root is
    checked here and the cross-certificate then serves as the anchor.
    """
    anchors = [root for root in trusted if _valid_ca(root, now)]
    return [
        c
        for c in candidates
        if not issued_by(c, [c]) and _valid_ca(c, now) and issued_by(c, anchors)
    ]


def _voucher(
    root: x509.Certificate,
    anchors: Sequence[x509.Certificate],
    cross_certificates: Sequence[x509.Certificate],
    now: datetime,
) -> x509.Certificate | None:
    if not (_valid_ca(root, now) and issued_by(root, [root])):
        return None
    for cross in cross_certificates:
        if (
            cross.subject == root.subject
            and cross.public_key() == root.public_key()
            and _valid_ca(cross, now)
            and issued_by(cross, anchors)
        ):
            return cross
    return None


def _valid_ca(certificate: x509.Certificate, now: datetime) -> bool:
    if not certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc:
        return False
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca and usage.value.key_cert_sign


def _refusal(root: x509.Certificate, cross_certificates: Sequence[x509.Certificate]) -> str:
    name = f"{root.subject.rfc4514_string()} ({fingerprint_sha256(root)[:16]}...)"
    if not any(c.public_key() == root.public_key() for c in cross_certificates):
        return f"root {name} not adopted: no cross-certificate carries its key"
    return (
        f"root {name} not adopted: no valid cross-certificate for it is signed by a root "
        "this client trusts"
    )


__all__ = ["RootAdoption", "adopt_roots", "cross_anchors"]
