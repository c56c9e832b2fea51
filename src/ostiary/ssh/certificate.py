"""OpenSSH certificates (openssh-portable ``PROTOCOL.certkeys``), built and signed here.

pyca/cryptography's ``SSHCertificateBuilder`` signs only with an in-memory key, so the
to-be-signed blob is assembled here and signed through the CA key object a
:class:`~ostiary.signers.base.Signer` hands out (its ``sign()`` may call a PKCS#11 token).
The layout::

    string  "<key type>-cert-v01@openssh.com"
    string  nonce
    ...     the subject key's fields (its public key blob without the type name)
    uint64  serial
    uint32  type (1 user, 2 host)
    string  key id
    string  valid principals (a packed list of strings)
    uint64  valid after        (seconds since the epoch)
    uint64  valid before
    string  critical options   (sorted name, string-wrapped value)
    string  extensions         (sorted name, empty value)
    string  reserved
    string  signature key      (the CA's public key blob)
    string  signature          (over everything above)

Signatures: Ed25519, ECDSA with the curve's hash (RFC 5656), RSA with ``rsa-sha2-512``
(RFC 8332). Subject keys: Ed25519, ECDSA P-256/P-384/P-521, RSA of at least 2048 bits;
FIDO ``sk-`` keys are refused (cryptography reads them as plain keys and drops the
application, so a certificate for one would not match it).
"""

from __future__ import annotations

import base64
import enum
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from ostiary.core.errors import BadRequest, MalformedInput, WeakKey
from ostiary.core.keys import check_public_key
from ostiary.ssh.wire import (
    decode_blob,
    mpint,
    public_key_blob,
    read_string,
    string,
    uint32,
    uint64,
)

#: Subject key types we certify, by their SSH names.
SUBJECT_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "ssh-rsa",
    }
)
#: OpenSSH's own limit on principals in one certificate (SSHKEY_CERT_MAX_PRINCIPALS).
MAX_PRINCIPALS = 256
_CERT_SUFFIX = "-cert-v01@openssh.com"
_EC_HASHES: dict[str, hashes.HashAlgorithm] = {
    "secp256r1": hashes.SHA256(),
    "secp384r1": hashes.SHA384(),
    "secp521r1": hashes.SHA512(),
}


class SSHCertificateType(enum.IntEnum):
    """The certificate's ``type`` field."""

    USER = 1
    HOST = 2


@dataclass(frozen=True)
class SSHPublicKey:
    """A subject's public key as read from an ``authorized_keys``-style line."""

    key_type: str
    blob: bytes
    key: PublicKeyTypes

    @property
    def fields(self) -> bytes:
        """The blob without its leading type name: what a certificate embeds."""
        _, offset = read_string(self.blob, 0)
        return self.blob[offset:]

    def line(self) -> str:
        return self.key.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ).decode("ascii")


def load_ssh_public_key_line(text: str | bytes) -> SSHPublicKey:
    """Read ``"<type> <base64> [comment]"``; refuse unknown, weak and ``sk-`` keys clearly."""
    raw = text.encode("utf-8", "replace") if isinstance(text, str) else text
    parts = raw.strip().split()
    if len(parts) < 2:
        raise MalformedInput("not an SSH public key: expected '<type> <base64> [comment]'")
    key_type = parts[0].decode("ascii", "replace")
    if key_type not in SUBJECT_KEY_TYPES:
        listed = ", ".join(sorted(SUBJECT_KEY_TYPES))
        raise BadRequest(f"SSH key type {key_type[:64]!r} is not certified here: use {listed}")
    blob = decode_blob(parts[1])
    try:
        embedded, _ = read_string(blob, 0)
        key = serialization.load_ssh_public_key(parts[0] + b" " + parts[1])
    except (ValueError, MalformedInput, UnicodeError, NotImplementedError, UnsupportedAlgorithm):
        # NotImplementedError: cryptography's answer to a compressed EC point (found by fuzz/)
        raise MalformedInput(f"not a valid {key_type} public key") from None
    if embedded != parts[0]:
        raise MalformedInput("the key's type name does not match its data")
    try:
        check_public_key(key)
    except WeakKey as exc:
        raise WeakKey(exc.detail) from None
    return SSHPublicKey(key_type, public_key_blob(key), key)


@dataclass(frozen=True)
class SSHCertificateFields:
    """Everything a certificate says, except the CA key and the signature."""

    public_key: SSHPublicKey
    serial: int
    cert_type: SSHCertificateType
    key_id: str
    principals: tuple[str, ...]
    valid_after: datetime
    valid_before: datetime
    critical_options: Mapping[str, str] = field(default_factory=dict)
    extensions: Sequence[str] = ()
    nonce: bytes = field(default_factory=lambda: os.urandom(32))


def _packed(items: Sequence[bytes]) -> bytes:
    return b"".join(items)


def _timestamp(moment: datetime) -> int:
    return int(moment.astimezone(UTC).timestamp())


def certificate_tbs(fields: SSHCertificateFields, ca_public_key: PublicKeyTypes) -> bytes:
    """The to-be-signed blob: the certificate up to and including the signature key."""
    if not 0 <= fields.serial < 2**64:
        raise BadRequest("an SSH certificate serial is a 64-bit unsigned number")
    if len(fields.principals) > MAX_PRINCIPALS:
        raise BadRequest(f"an SSH certificate carries at most {MAX_PRINCIPALS} principals")
    options = sorted(fields.critical_options.items(), key=lambda item: item[0].encode())
    extensions = sorted(set(fields.extensions), key=str.encode)
    return b"".join(
        [
            string(fields.public_key.key_type + _CERT_SUFFIX),
            string(fields.nonce),
            fields.public_key.fields,
            uint64(fields.serial),
            uint32(int(fields.cert_type)),
            string(fields.key_id),
            string(_packed([string(p) for p in fields.principals])),
            uint64(_timestamp(fields.valid_after)),
            uint64(_timestamp(fields.valid_before)),
            string(_packed([string(name) + string(string(value)) for name, value in options])),
            string(_packed([string(name) + string(b"") for name in extensions])),
            string(b""),
            string(public_key_blob(ca_public_key)),
        ]
    )


def ssh_signature(key: CertificateIssuerPrivateKeyTypes, data: bytes) -> bytes:
    """An SSH signature blob (``string algorithm``, ``string signature``) over ``data``."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return string("ssh-ed25519") + string(key.sign(data))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        curve = key.curve.name
        if curve not in _EC_HASHES:
            raise BadRequest(f"an SSH CA key on curve {curve} cannot sign")
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(_EC_HASHES[curve])))
        name = "ecdsa-sha2-nistp" + str(key.curve.key_size)
        return string(name) + string(mpint(r) + mpint(s))
    if isinstance(key, rsa.RSAPrivateKey):
        return string("rsa-sha2-512") + string(key.sign(data, padding.PKCS1v15(), hashes.SHA512()))
    raise BadRequest(f"an SSH CA key of type {type(key).__name__} cannot sign")


def sign_certificate(
    fields: SSHCertificateFields, ca_key: CertificateIssuerPrivateKeyTypes
) -> bytes:
    """The signed certificate blob (what ``-cert.pub`` files carry, base64-encoded)."""
    tbs = certificate_tbs(fields, ca_key.public_key())
    return tbs + string(ssh_signature(ca_key, tbs))


def certificate_line(blob: bytes, comment: str = "") -> str:
    """``"<cert type> <base64> [comment]"``, as in a ``-cert.pub`` file."""
    name, _ = read_string(blob, 0)
    text = f"{name.decode('ascii')} {base64.b64encode(blob).decode('ascii')}"
    return f"{text} {comment}" if comment else text


def ca_public_key_line(key: PublicKeyTypes, comment: str = "") -> str:
    """The CA key as an ``authorized_keys``-style line (for TrustedUserCAKeys, known_hosts)."""
    text = key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode("ascii")
    return f"{text} {comment}" if comment else text
