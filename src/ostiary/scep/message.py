"""Reading a SCEP pkiMessage (RFC 8894 §3): verify its signature, open its envelope.

A pkiMessage is CMS SignedData whose signer is the device's (self-signed, or current)
certificate; its content is an EnvelopedData encrypted to our RA certificate, holding a
PKCS#10 request (PKCSReq, RenewalReq) or an IssuerAndSubject (CertPoll).

What real clients send, and what is accepted here (``docs/mdm.md``):

- the signature is checked over the signed attributes *exactly as received* (legacy clients
  send the SET unsorted; re-encoding it would break their signature), and ``messageDigest``
  over the content;
- SHA-1, SHA-256 and SHA-512; single DES, 3DES, AES-128 and AES-256 in CBC mode; RSA
  PKCS#1 v1.5 key transport to the RA among several recipients;
- Go's pkcs7 (micromdm's scepclient) encodes the encrypted content as a *constructed*
  ``[0]``, which asn1crypto refuses to read as primitive: its segments are joined with
  asn1crypto's own DER parser.

Every refusal is a :class:`ScepFailure` with the RFC's failInfo; the parsing and the
cryptography are asn1crypto's and pyca/cryptography's.
"""

from __future__ import annotations

import functools
import hmac
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from asn1crypto import cms, core, parser
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import padding as block_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ostiary.core.encoding import load_certificate
from ostiary.core.errors import MalformedInput


class MessageType(IntEnum):
    CERT_REP = 3
    RENEWAL_REQ = 17
    PKCS_REQ = 19
    CERT_POLL = 20  # GetCertInitial in older drafts
    GET_CERT = 21
    GET_CRL = 22


class FailInfo(IntEnum):
    BAD_ALG = 0
    BAD_MESSAGE_CHECK = 1
    BAD_REQUEST = 2
    BAD_TIME = 3
    BAD_CERT_ID = 4


#: The SCEP signed attributes (2.16.840.1.113733.1.9.x).
MESSAGE_TYPE = "2.16.840.1.113733.1.9.2"
PKI_STATUS = "2.16.840.1.113733.1.9.3"
FAIL_INFO = "2.16.840.1.113733.1.9.4"
SENDER_NONCE = "2.16.840.1.113733.1.9.5"
RECIPIENT_NONCE = "2.16.840.1.113733.1.9.6"
TRANSACTION_ID = "2.16.840.1.113733.1.9.7"
#: RFC 8894's failInfoText (id-scep-failInfoText).
FAIL_INFO_TEXT = "1.3.6.1.5.5.7.24.1"

#: Digest algorithms accepted, by asn1crypto's name, and answered in kind.
DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha512": hashes.SHA512,
}
#: Content ciphers accepted (asn1crypto's names) with their key sizes in bytes.
CIPHERS: dict[str, int] = {"des": 8, "tripledes_3key": 24, "aes128_cbc": 16, "aes256_cbc": 32}


class ScepFailure(Exception):
    """A request refused with a failInfo; ``reason`` is logged and sent as failInfoText."""

    def __init__(self, fail_info: FailInfo, reason: str) -> None:
        super().__init__(reason)
        self.fail_info = fail_info
        self.reason = reason


@dataclass(frozen=True)
class Envelope:
    """What a CertRep must mirror: who asked, in which transaction, with which algorithms."""

    transaction_id: str
    sender_nonce: bytes
    signer: x509.Certificate
    digest: str
    cipher: str


@dataclass(frozen=True)
class PkiMessage:
    """A verified, decrypted request."""

    message_type: MessageType
    envelope: Envelope
    #: The decrypted content: a DER PKCS#10 or IssuerAndSubject.
    content: bytes


class Outer(NamedTuple):
    """A pkiMessage's outer SignedData as read, before anything is verified."""

    signed: cms.SignedData
    signer_info: cms.SignerInfo
    envelope: Envelope
    message_type: MessageType
    #: The signed attributes by dotted OID (and asn1crypto's name for the known ones).
    attributes: dict[str, object]


def read_envelope(der: bytes) -> Outer:
    """The outer SignedData and its SCEP attributes, before anything is verified.

    :class:`ValueError` when it is not a pkiMessage at all (no CertRep can answer that).
    """
    try:
        info = cms.ContentInfo.load(der, strict=True)
        if info["content_type"].native != "signed_data":
            raise ValueError("not a CMS SignedData")
        signed: cms.SignedData = info["content"]
        signers = list(signed["signer_infos"])
        if len(signers) != 1:
            raise ValueError("a pkiMessage has exactly one signer")
        signer_info: cms.SignerInfo = signers[0]
        attributes = _attributes(signer_info)
        transaction_id = _text(attributes, TRANSACTION_ID)
        if not all(ord(c) < 0x100 for c in transaction_id):  # echoed as a PrintableString
            raise ValueError("the transactionID has characters beyond Latin-1")
        nonce = _octets(attributes, SENDER_NONCE)
        message_type = MessageType(int(_text(attributes, MESSAGE_TYPE)))
        signer = _signer_certificate(signed, signer_info)
        digest = signer_info["digest_algorithm"]["algorithm"].native
    except (ValueError, TypeError, KeyError, LookupError) as exc:
        raise ValueError(f"not a SCEP pkiMessage: {exc}") from None
    cipher = ""  # filled in when the envelope is opened
    envelope = Envelope(transaction_id, nonce, signer, digest, cipher)
    return Outer(signed, signer_info, envelope, message_type, attributes)


def open_message(
    outer: Outer, *, ra_certificate: x509.Certificate, ra_key: rsa.RSAPrivateKey
) -> PkiMessage:
    """Verify and decrypt what :func:`read_envelope` read; :class:`ScepFailure` with the
    failInfo if refused (answered with a FAILURE CertRep).
    """
    envelope, message_type = outer.envelope, outer.message_type
    if envelope.digest not in DIGESTS:
        raise ScepFailure(FailInfo.BAD_ALG, f"digest {envelope.digest} is not supported")
    content = _verify(outer)
    if message_type not in (MessageType.PKCS_REQ, MessageType.RENEWAL_REQ, MessageType.CERT_POLL):
        raise ScepFailure(FailInfo.BAD_REQUEST, f"message type {message_type.name} is not served")
    cipher, plain = _decrypt(content, ra_certificate, ra_key)
    return PkiMessage(
        message_type,
        Envelope(
            envelope.transaction_id, envelope.sender_nonce, envelope.signer, envelope.digest, cipher
        ),
        plain,
    )


# --------------------------------------------------------------------------- signature


def _verify(outer: Outer) -> bytes:
    """The eContent, once the signer's signature over the received attributes holds."""
    signed, signer_info, envelope = outer.signed, outer.signer_info, outer.envelope
    algorithm = DIGESTS[envelope.digest]()
    try:
        content = signed["encap_content_info"]["content"].native
        raw_attributes = signer_info["signed_attrs"].dump()
        signature = signer_info["signature"].native
        message_digest = outer.attributes["message_digest"]
    except (ValueError, TypeError, KeyError) as exc:
        raise ScepFailure(FailInfo.BAD_MESSAGE_CHECK, f"unreadable signed content: {exc}") from None
    if not isinstance(content, bytes) or not isinstance(message_digest, bytes):
        raise ScepFailure(FailInfo.BAD_MESSAGE_CHECK, "the pkiMessage carries no content")
    hasher = hashes.Hash(algorithm)
    hasher.update(content)
    if not hmac.compare_digest(hasher.finalize(), message_digest):
        raise ScepFailure(FailInfo.BAD_MESSAGE_CHECK, "messageDigest does not match the content")
    public_key = envelope.signer.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise ScepFailure(FailInfo.BAD_ALG, "the request is not signed with an RSA key")
    # The SET OF as received: its [0] IMPLICIT tag byte becomes the SET tag (RFC 5652 §5.4).
    signed_bytes = b"\x31" + raw_attributes[1:]
    try:
        public_key.verify(signature, signed_bytes, padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        raise ScepFailure(
            FailInfo.BAD_MESSAGE_CHECK, "the request signature does not verify"
        ) from None
    return content


def _attributes(signer_info: cms.SignerInfo) -> dict[str, object]:
    """The signed attributes by dotted OID (and asn1crypto's name for the known ones)."""
    found: dict[str, object] = {}
    for attribute in signer_info["signed_attrs"]:
        values = attribute["values"]
        if len(values) != 1:
            raise ValueError("a SCEP attribute has exactly one value")
        name = attribute["type"].native
        dotted = attribute["type"].dotted
        value = values[0]
        try:
            native = (
                value.native if not isinstance(value, core.Any) else core.load(value.dump()).native
            )
        except (AttributeError, TypeError, ValueError):  # e.g. a REAL: asn1crypto has no native
            raise ValueError(f"the SCEP attribute {dotted} cannot be read") from None
        found[dotted] = found[name] = native
    return found


def _text(attributes: dict[str, object], oid: str) -> str:
    value = attributes.get(oid)
    if not isinstance(value, str) or not value:
        raise ValueError(f"attribute {oid} is missing or not text")
    return value


def _octets(attributes: dict[str, object], oid: str) -> bytes:
    value = attributes.get(oid)
    if not isinstance(value, bytes) or not 8 <= len(value) <= 64:
        raise ValueError(f"attribute {oid} is missing or not a nonce")
    return value


def _signer_certificate(signed: cms.SignedData, signer_info: cms.SignerInfo) -> x509.Certificate:
    sid = signer_info["sid"]
    for choice in signed["certificates"] or ():
        if choice.name != "certificate":
            continue
        candidate = choice.chosen
        if sid.name == "issuer_and_serial_number":
            wanted = sid.chosen
            if candidate.serial_number == wanted["serial_number"].native and _same_name(
                candidate.issuer, wanted["issuer"]
            ):
                return _read_certificate(candidate)
        elif candidate.key_identifier == sid.chosen.native:
            return _read_certificate(candidate)
    raise ValueError("the signer's certificate is not in the message")


def _same_name(one: asn1_x509.Name, other: asn1_x509.Name) -> bool:
    """The same bytes (every client copies its certificate's issuer), else the same name by
    RFC 5280's comparison (asn1crypto's, costly: string preparation of every value).
    """
    return bool(one.dump() == other.dump() or one == other)


def _read_certificate(candidate: asn1_x509.Certificate) -> x509.Certificate:
    """The signer's certificate read in full now (names, extensions, key), so that a part
    cryptography cannot read is "not a pkiMessage" here, not an exception later (found by
    the ``scep`` fuzz harness: an unknown key type, a bad version).
    """
    try:
        return load_certificate(candidate.dump())
    except MalformedInput as exc:
        raise ValueError(f"the signer's certificate: {exc.detail}") from None


# --------------------------------------------------------------------------- envelope


def _decrypt(
    content: bytes, ra_certificate: x509.Certificate, ra_key: rsa.RSAPrivateKey
) -> tuple[str, bytes]:
    """(cipher name, plaintext) of the pkcsPKIEnvelope in ``content``."""
    try:
        info = cms.ContentInfo.load(content)
        if info["content_type"].native != "enveloped_data":
            raise ValueError("the content is not an EnvelopedData")
        enveloped: cms.EnvelopedData = info["content"]
        encrypted_info = enveloped["encrypted_content_info"]
        algorithm = encrypted_info["content_encryption_algorithm"]
        cipher = algorithm["algorithm"].native
        iv = algorithm["parameters"].native
        recipients = list(enveloped["recipient_infos"])
        ciphertext = _encrypted_content(encrypted_info.contents)
    except (ValueError, TypeError, KeyError) as exc:
        raise ScepFailure(
            FailInfo.BAD_MESSAGE_CHECK, f"the envelope does not parse: {exc}"
        ) from None
    if cipher not in CIPHERS:
        raise ScepFailure(FailInfo.BAD_ALG, f"content cipher {cipher} is not supported")
    encrypted_key = _our_encrypted_key(recipients, ra_certificate)
    try:
        key = ra_key.decrypt(encrypted_key, padding.PKCS1v15())
    except ValueError:
        raise ScepFailure(FailInfo.BAD_MESSAGE_CHECK, "the content key does not decrypt") from None
    if len(key) != CIPHERS[cipher] or not isinstance(iv, bytes):
        raise ScepFailure(FailInfo.BAD_MESSAGE_CHECK, "the content key or IV has the wrong size")
    try:
        return cipher, _cbc_decrypt(cipher, key, iv, ciphertext)
    except ValueError:
        raise ScepFailure(FailInfo.BAD_MESSAGE_CHECK, "the content does not decrypt") from None


def _our_encrypted_key(recipients: list[cms.RecipientInfo], ra: x509.Certificate) -> bytes:
    """The encrypted key of the recipient that is our RA (clients encrypt to every CA cert)."""
    for recipient in recipients:
        if recipient.name != "ktri":
            continue
        ktri = recipient.chosen
        rid = ktri["rid"]
        if rid.name != "issuer_and_serial_number":
            continue
        if rid.chosen["serial_number"].native != ra.serial_number:
            continue
        if rid.chosen["issuer"].dump() != _issuer_bytes(ra):
            continue
        if ktri["key_encryption_algorithm"]["algorithm"].native != "rsaes_pkcs1v15":
            raise ScepFailure(FailInfo.BAD_ALG, "the content key is not RSA PKCS#1 v1.5 encrypted")
        encrypted: bytes = ktri["encrypted_key"].native
        return encrypted
    raise ScepFailure(FailInfo.BAD_MESSAGE_CHECK, "the message is not encrypted to our RA")


@functools.lru_cache(maxsize=16)
def _issuer_bytes(certificate: x509.Certificate) -> bytes:
    """The DER of the RA's issuer name, made once per RA."""
    return certificate.issuer.public_bytes()


def _encrypted_content(encrypted_content_info: bytes) -> bytes:
    """The ``[0]`` encryptedContent of an EncryptedContentInfo's contents, primitive or
    constructed (Go's pkcs7 writes the constructed form), its segments joined.
    """
    pointer = 0
    for _ in range(2):  # contentType, contentEncryptionAlgorithm
        pointer = _skip(encrypted_content_info, pointer)
    class_, method, tag, _, contents, _ = parser.parse(encrypted_content_info[pointer:])
    if class_ != 2 or tag != 0:
        raise ValueError("no encryptedContent")
    return contents if method == 0 else _segments(contents)


def _skip(data: bytes, pointer: int) -> int:
    _, _, _, header, contents, trailer = parser.parse(data[pointer:])
    return pointer + len(header) + len(contents) + len(trailer)


def _segments(data: bytes) -> bytes:
    """The concatenated OCTET STRING segments of a constructed string's contents."""
    out = []
    pointer = 0
    while pointer < len(data):
        _, method, _, header, contents, trailer = parser.parse(data[pointer:])
        out.append(contents if method == 0 else _segments(contents))
        pointer += len(header) + len(contents) + len(trailer)
    return b"".join(out)


def cipher_algorithm(name: str, key: bytes) -> algorithms.AES | TripleDES:
    """The block cipher ``name`` (single DES is 3DES with the key three times, K‖K‖K)."""
    if name.startswith("aes"):
        return algorithms.AES(key)
    return TripleDES(key * 3 if len(key) == 8 else key)


def _cbc_decrypt(cipher: str, key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    block = cipher_algorithm(cipher, key)
    decryptor = Cipher(block, modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = block_padding.PKCS7(block.block_size).unpadder()
    return unpadder.update(padded) + unpadder.finalize()
