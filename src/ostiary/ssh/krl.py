r"""OpenSSH key revocation lists (openssh-portable ``PROTOCOL.krl``), written here.

No Python library writes KRLs, and the part we need is small: a header and, per CA key, a
certificates section listing revoked serial numbers::

    uint64  KRL_MAGIC (0x5353484b524c0a00, "SSHKRL\n\0")
    uint32  KRL_FORMAT_VERSION (1)
    uint64  krl_version          (grows with every KRL we write: the number of revocations)
    uint64  generated_date       (the newest revocation's time: same content, same bytes)
    uint64  flags (0)
    string  reserved
    string  comment
    byte    KRL_SECTION_CERTIFICATES (1)
    string  section:  string ca_key, string reserved,
                      byte KRL_SECTION_CERT_SERIAL_LIST (0x20), string (uint64 serial)*

The KRL is unsigned: sshd's ``RevokedKeys`` does not check KRL signatures. ``ssh-keygen -Q
-f KRL CERT`` reads what this writes (tests/ssh).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from ostiary.ssh.wire import public_key_blob, string, uint32, uint64

KRL_MAGIC = 0x5353484B524C0A00
KRL_FORMAT_VERSION = 1
_SECTION_CERTIFICATES = b"\x01"
_CERT_SERIAL_LIST = b"\x20"
#: How the KRL is served over HTTP.
KRL_MEDIA_TYPE = "application/octet-stream"
#: The response header naming the KRL's version (``GET /ssh/krl?after=N&wait=S``).
KRL_VERSION_HEADER = "Ostiary-KRL-Version"


def build_krl(
    revoked: Sequence[tuple[PublicKeyTypes, Iterable[int]]],
    *,
    version: int,
    now: datetime,
    comment: str = "",
) -> bytes:
    """A KRL revoking, for each (CA key, serials) pair, those certificate serials."""
    sections = []
    for ca_key, serials in revoked:
        listed = sorted(set(serials))
        if not listed:
            continue
        serial_list = b"".join(uint64(s) for s in listed)
        body = string(public_key_blob(ca_key)) + string(b"")
        body += _CERT_SERIAL_LIST + string(serial_list)
        sections.append(_SECTION_CERTIFICATES + string(body))
    header = b"".join(
        [
            uint64(KRL_MAGIC),
            uint32(KRL_FORMAT_VERSION),
            uint64(version),
            uint64(int(now.astimezone(UTC).timestamp())),
            uint64(0),
            string(b""),
            string(comment),
        ]
    )
    return header + b"".join(sections)
