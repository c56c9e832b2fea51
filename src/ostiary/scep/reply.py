"""Writing SCEP answers: the degenerate certs-only PKCS#7 and the signed CertRep.

A CertRep (RFC 8894 §3.3.2) is SignedData signed by the RA, with the device's transactionID,
``recipientNonce`` = its senderNonce, a fresh senderNonce, and the status. On SUCCESS the
content is an EnvelopedData encrypted to the device's signer certificate, with the cipher
the device used, holding a certs-only PKCS#7 of the new certificate; on FAILURE and PENDING
the content is empty (an OCTET STRING of length 0: certmonger reports "no content" without
it). The digest is the device's too. The structures are asn1crypto's, the cryptography
pyca/cryptography's.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from enum import IntEnum

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as block_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.serialization import pkcs7

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
        _attribute("content_type", cms.ContentType("data")),
        _attribute("message_digest", core.OctetString(hasher.finalize())),
        _attribute(MESSAGE_TYPE, core.PrintableString(str(int(MessageType.CERT_REP)))),
        _attribute(PKI_STATUS, core.PrintableString(str(int(status)))),
        _attribute(TRANSACTION_ID, core.PrintableString(request.transaction_id)),
        _attribute(SENDER_NONCE, core.OctetString(os.urandom(16))),
        _attribute(RECIPIENT_NONCE, core.OctetString(request.sender_nonce)),
    ]
    if status == PkiStatus.FAILURE:
        attributes.append(
            _attribute(FAIL_INFO, core.PrintableString(str(int(fail_info or FailInfo.BAD_REQUEST))))
        )
        if fail_text:
            attributes.append(_attribute(FAIL_INFO_TEXT, core.UTF8String(fail_text[:200])))
    # DER: a SET OF is sorted by the encodings of its members (clients re-encode to verify).
    attributes.sort(key=lambda attribute: attribute.dump())
    signed_attributes = cms.CMSAttributes(attributes)
    to_sign = b"\x31" + signed_attributes.dump()[1:]
    signature = ra_key.sign(to_sign, padding.PKCS1v15(), algorithm)
    sid, certificates = _ra_parts(ra_certificate)
    signer = cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier.load(sid),
            "digest_algorithm": {"algorithm": digest},
            "signed_attrs": signed_attributes,
            "signature_algorithm": {"algorithm": "rsassa_pkcs1v15"},
            "signature": signature,
        }
    )
    signed = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [{"algorithm": digest}],
            "encap_content_info": {"content_type": "data", "content": content},
            "certificates": cms.CertificateSet.load(certificates),
            "signer_infos": [signer],
        }
    )
    return bytes(cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump())


@functools.lru_cache(maxsize=16)
def _ra_parts(ra_certificate: x509.Certificate) -> tuple[bytes, bytes]:
    """The DER of the RA's SignerIdentifier and of the CertificateSet holding the RA, made
    once per RA: asn1crypto re-encodes a parsed certificate each time it is placed in a new
    structure, which cost more than the rest of a CertRep. Each CertRep loads fresh objects
    from these bytes (asn1crypto's values are mutable, and CertReps are built in threads).
    """
    ra = asn1_x509.Certificate.load(ra_certificate.public_bytes(serialization.Encoding.DER))
    sid = cms.SignerIdentifier(
        "issuer_and_serial_number",
        cms.IssuerAndSerialNumber({"issuer": ra.issuer, "serial_number": ra.serial_number}),
    )
    return sid.dump(), cms.CertificateSet([ra]).dump()


def _attribute(kind: str, value: core.Asn1Value) -> cms.CMSAttribute:
    if kind[0].isdigit():  # a SCEP attribute asn1crypto has no name for: kept as Any
        return cms.CMSAttribute({"type": kind, "values": [core.Any(value)]})
    return cms.CMSAttribute({"type": kind, "values": [value]})


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
    signer = asn1_x509.Certificate.load(request.signer.public_bytes(serialization.Encoding.DER))
    recipient = cms.KeyTransRecipientInfo(
        {
            "version": "v0",
            "rid": cms.RecipientIdentifier(
                "issuer_and_serial_number",
                cms.IssuerAndSerialNumber(
                    {"issuer": signer.issuer, "serial_number": signer.serial_number}
                ),
            ),
            "key_encryption_algorithm": {"algorithm": "rsaes_pkcs1v15"},
            "encrypted_key": public_key.encrypt(key, padding.PKCS1v15()),
        }
    )
    enveloped = cms.EnvelopedData(
        {
            "version": "v0",
            "recipient_infos": [cms.RecipientInfo("ktri", recipient)],
            "encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": {"algorithm": cipher, "parameters": iv},
                "encrypted_content": ciphertext,
            },
        }
    )
    return bytes(cms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump())
