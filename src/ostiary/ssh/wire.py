"""The SSH wire encoding (RFC 4251, section 5): ``uint32``, ``uint64``, ``string``, ``mpint``.

Public key blobs are not encoded here: pyca/cryptography writes them
(``Encoding.OpenSSH``), and :func:`public_key_blob` takes its output apart.
"""

from __future__ import annotations

import base64
import binascii
import struct

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from ostiary.core.errors import MalformedInput


def uint32(value: int) -> bytes:
    return struct.pack(">I", value)


def uint64(value: int) -> bytes:
    return struct.pack(">Q", value)


def string(value: bytes | str) -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else value
    return uint32(len(data)) + data


def mpint(value: int) -> bytes:
    """A non-negative ``mpint``: big-endian, a leading zero octet when the top bit is set."""
    if value == 0:
        return string(b"")
    return string(value.to_bytes(value.bit_length() // 8 + 1, "big"))


def read_string(data: bytes, offset: int) -> tuple[bytes, int]:
    """The ``string`` at ``offset`` and the offset after it."""
    if offset + 4 > len(data):
        raise MalformedInput("truncated SSH data")
    (length,) = struct.unpack_from(">I", data, offset)
    end = offset + 4 + length
    if end > len(data):
        raise MalformedInput("truncated SSH data")
    return data[offset + 4 : end], end


def public_key_blob(key: PublicKeyTypes) -> bytes:
    """The key's SSH wire blob (``string type`` then the key's fields), by cryptography."""
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return decode_blob(line.split(b" ")[1])


def decode_blob(text: bytes | str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedInput("not base64") from None


def key_type_of_blob(blob: bytes) -> str:
    name, _ = read_string(blob, 0)
    return name.decode("ascii", "replace")
