"""Checking an SSH signature blob (``string algorithm``, ``string signature``; RFC 4253
6.6, RFC 5656 3.1.2, RFC 8332 3, RFC 8709 6) with a public key.

:func:`~ostiary.ssh.certificate.ssh_signature` makes them; hosts sign their renewal
challenge with it (:mod:`ostiary.provisioners.ssh_renewal`).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ostiary.core.errors import MalformedInput, Unauthorized
from ostiary.ssh.wire import read_string

_RENEWAL_LABEL = b"ostiary-ssh-host-renewal"
_EC = {
    "ecdsa-sha2-nistp256": ("secp256r1", hashes.SHA256()),
    "ecdsa-sha2-nistp384": ("secp384r1", hashes.SHA384()),
    "ecdsa-sha2-nistp521": ("secp521r1", hashes.SHA512()),
}
_RSA: dict[str, hashes.HashAlgorithm] = {
    "rsa-sha2-256": hashes.SHA256(),
    "rsa-sha2-512": hashes.SHA512(),
}


def verify_ssh_signature(public_key: PublicKeyTypes, data: bytes, blob: bytes) -> None:
    """Refuse (:class:`Unauthorized`) unless ``blob`` is ``public_key``'s signature of ``data``.

    SHA-1 RSA signatures (``ssh-rsa``) are refused.
    """
    algorithm_bytes, offset = read_string(blob, 0)
    signature, end = read_string(blob, offset)
    if end != len(blob):
        raise MalformedInput("the SSH signature has trailing data")
    algorithm = algorithm_bytes.decode("ascii", "replace")
    try:
        if algorithm == "ssh-ed25519" and isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, data)
            return
        if algorithm in _EC and isinstance(public_key, ec.EllipticCurvePublicKey):
            curve, digest = _EC[algorithm]
            if public_key.curve.name != curve:
                raise Unauthorized("the signature's curve is not the key's")
            r, rest = read_string(signature, 0)
            s, rest_end = read_string(signature, rest)
            if rest_end != len(signature):
                raise MalformedInput("the ECDSA signature has trailing data")
            der = encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))
            public_key.verify(der, data, ec.ECDSA(digest))
            return
        if algorithm in _RSA and isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), _RSA[algorithm])
            return
    except InvalidSignature:
        raise Unauthorized("the signature does not verify with the certificate's key") from None
    raise Unauthorized(f"a {algorithm[:40]!r} signature does not fit the certificate's key")


def renewal_message(nonce: str, certificate_blob: bytes) -> bytes:
    """What a host key signs to renew its certificate: a label, the CA's challenge and the
    current certificate's blob (so the signature is good for that renewal only).
    """
    return _RENEWAL_LABEL + b"\0" + nonce.encode("ascii") + b"\0" + certificate_blob
