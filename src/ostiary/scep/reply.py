"""Writing SCEP answers: the degenerate certs-only PKCS#7 and the signed CertRep.

A CertRep (RFC 8894 §3.3.2) is SignedData signed by the RA, with the device's transactionID,
``recipientNonce`` = its senderNonce, a fresh senderNonce, and the status. On SUCCESS the
content is an EnvelopedData encrypted to the device's signer certificate, with the cipher
the device used, holding a certs-only PKCS#7 of the new certificate; on FAILURE and PENDING
the content is empty (an OCTET STRING of length 0: certmonger reports "no content" without
it). The digest is the device's too. The DER is written directly (:mod:`ostiary.scep.der`:
a fixed shape, ~30x cheaper than asn1crypto objects), the cryptography is
pyca/cryptography's.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from enum import IntEnum

from asn1crypto import algos
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as block_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.serialization import pkcs7

from ostiary.scep import der
from ostiary.scep.message import (
    CIPHERS,
    DIGESTS,
    FAIL_INFO,
    FAIL_INFO_TEXT,
    MESSAGE_TYPE,
    PKI_STATUS,
    RECIPIENT_NONCE,
    SENDER_NONCE,
    TRANSACTION_ID,
    Envelope,
    FailInfo,
    MessageType,
    ScepFailure,
    cipher_algorithm,
)


class PkiStatus(IntEnum):
    SUCCESS = 0
    FAILURE = 2
    PENDING = 3


def certs_only(certificates: Sequence[x509.Certificate]) -> bytes:
    """A degenerate PKCS#7 SignedData holding ``certificates`` (GetCACert, CertRep).

    DER sorts the SET OF certificates, so the RA is not necessarily first: clients find it
    by its key usage (certmonger) or encrypt to every certificate (scepclient).
    """
    return pkcs7.serialize_certificates(list(certificates), serialization.Encoding.DER)


def cert_rep(
    request: Envelope,
    status: PkiStatus,
    *,
    ra_certificate: x509.Certificate,
    ra_key: rsa.RSAPrivateKey,
    issued: x509.Certificate | None = None,
    fail_info: FailInfo | None = None,
    fail_text: str | None = None,
) -> bytes:
    """The DER CertRep answering ``request`` with ``status``."""
    digest = request.digest if request.digest in DIGESTS else "sha256"
    algorithm = DIGESTS[digest]()
    content = b""
    if status == PkiStatus.SUCCESS:
        if issued is None:
            raise ValueError("a SUCCESS CertRep carries the issued certificate")
        content = _envelope(certs_only([issued]), request)
    hasher = hashes.Hash(algorithm)
    hasher.update(content)
    attributes = [
        _attribute(_CONTENT_TYPE, _DATA),
        _attribute(_MESSAGE_DIGEST, der.tlv(der.OCTET_STRING, hasher.finalize())),
        _attribute(_MESSAGE_TYPE, _printable(str(int(MessageType.CERT_REP)))),
        _attribute(_PKI_STATUS, _printable(str(int(status)))),
        _attribute(_TRANSACTION_ID, _printable(request.transaction_id)),
        _attribute(_SENDER_NONCE, der.tlv(der.OCTET_STRING, os.urandom(16))),
        _attribute(_RECIPIENT_NONCE, der.tlv(der.OCTET_STRING, request.sender_nonce)),
    ]
    if status == PkiStatus.FAILURE:
        code = str(int(fail_info or FailInfo.BAD_REQUEST))
        attributes.append(_attribute(_FAIL_INFO, _printable(code)))
        if fail_text:
            text = fail_text[:200].encode("utf-8")
            attributes.append(_attribute(_FAIL_INFO_TEXT, der.tlv(der.UTF8_STRING, text)))
    # DER: a SET OF is sorted by the encodings of its members (clients re-encode to verify).
    signed_attributes = der.set_of(*attributes)
    signature = ra_key.sign(signed_attributes, padding.PKCS1v15(), algorithm)
    sid, certificates = _ra_parts(ra_certificate)
    return der.signed_data(
        content,
        signed_attributes,
        signature,
        sid=sid,
        certificates=certificates,
        digest_algorithm=_DIGEST_ALGORITHMS[digest],
        signature_algorithm=_RSA_ENCRYPTION,
    )


#: The OIDs and algorithm identifiers of a CertRep, encoded once.
_DATA = der.DATA
_ENVELOPED_DATA = der.oid("1.2.840.113549.1.7.3")
_CONTENT_TYPE = der.oid("1.2.840.113549.1.9.3")
_MESSAGE_DIGEST = der.oid("1.2.840.113549.1.9.4")
_MESSAGE_TYPE, _PKI_STATUS, _FAIL_INFO = (
    der.oid(MESSAGE_TYPE),
    der.oid(PKI_STATUS),
    der.oid(FAIL_INFO),
)
_SENDER_NONCE, _RECIPIENT_NONCE = der.oid(SENDER_NONCE), der.oid(RECIPIENT_NONCE)
_TRANSACTION_ID, _FAIL_INFO_TEXT = der.oid(TRANSACTION_ID), der.oid(FAIL_INFO_TEXT)
#: rsaEncryption: the signature algorithm of a SignerInfo and the key transport of a
#: KeyTransRecipientInfo (PKCS#1 v1.5 in both, RFC 3370 §3.2, §4.2.1).
_RSA_ENCRYPTION = der.algorithm(der.oid("1.2.840.113549.1.1.1"))
_DIGEST_ALGORITHMS = {
    name: der.algorithm(der.oid(algos.DigestAlgorithmId(name).dotted)) for name in DIGESTS
}
_CIPHERS = {name: der.oid(algos.EncryptionAlgorithmId(name).dotted) for name in CIPHERS}


def _printable(text: str) -> bytes:
    """A PrintableString, as asn1crypto writes one (Latin-1: :func:`read_envelope
    <ostiary.scep.message.read_envelope>` refuses a transactionID beyond it).
    """
    return der.tlv(der.PRINTABLE_STRING, text.encode("latin-1"))


def _attribute(kind: bytes, value: bytes) -> bytes:
    """An Attribute with one value (RFC 5652 §5.3)."""
    return der.tlv(der.SEQUENCE, kind, der.tlv(der.SET, value))


@functools.lru_cache(maxsize=16)
def _ra_parts(ra_certificate: x509.Certificate) -> tuple[bytes, bytes]:
    """The RA's SignerIdentifier and the ``[0] IMPLICIT`` CertificateSet holding the RA,
    made once per RA.
    """
    ra = ra_certificate.public_bytes(serialization.Encoding.DER)
    return der.issuer_and_serial_number(ra_certificate), der.tlv(der.CONTEXT_0, ra)


def _envelope(plain: bytes, request: Envelope) -> bytes:
    """EnvelopedData of ``plain`` to the requester's signer certificate, in its cipher."""
    public_key = request.signer.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise ScepFailure(FailInfo.BAD_ALG, "the requester's certificate has no RSA key")
    cipher = request.cipher if request.cipher in CIPHERS else "aes256_cbc"
    key = os.urandom(CIPHERS[cipher])
    block = cipher_algorithm(cipher, key)
    iv = os.urandom(block.block_size // 8)
    padder = block_padding.PKCS7(block.block_size).padder()
    encryptor = Cipher(block, modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padder.update(plain) + padder.finalize()) + encryptor.finalize()
    recipient = der.tlv(
        der.SEQUENCE,
        der.small_integer(0),
        der.issuer_and_serial_number(request.signer),
        _RSA_ENCRYPTION,
        der.tlv(der.OCTET_STRING, public_key.encrypt(key, padding.PKCS1v15())),
    )
    enveloped = der.tlv(
        der.SEQUENCE,
        der.small_integer(0),
        der.set_of(recipient),
        der.tlv(
            der.SEQUENCE,
            _DATA,
            der.tlv(der.SEQUENCE, _CIPHERS[cipher], der.tlv(der.OCTET_STRING, iv)),
            # encryptedContent [0] IMPLICIT OCTET STRING: primitive
            der.tlv(0x80, ciphertext),
        ),
    )
    return der.tlv(der.SEQUENCE, _ENVELOPED_DATA, der.tlv(der.CONTEXT_0, enveloped))
