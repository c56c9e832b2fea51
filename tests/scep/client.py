"""A small SCEP client for the tests (asn1crypto + cryptography), built from RFC 8894.

It makes what real clients send, with knobs for what they get wrong: any cipher and digest,
several recipients, a tampered signature, a garbled envelope. It reads CertReps back:
status, failInfo, and the issued certificate (verifying the RA's signature over the
attributes as received).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as block_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import pkcs7

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
from scep_lean import make_csr, self_signed  # bench/scep_lean.py, the bench's SCEP client

__all__ = ["Reply", "Request", "make_csr", "read_reply", "self_signed", "send"]

MESSAGE_TYPE = "2.16.840.1.113733.1.9.2"
PKI_STATUS = "2.16.840.1.113733.1.9.3"
FAIL_INFO = "2.16.840.1.113733.1.9.4"
SENDER_NONCE = "2.16.840.1.113733.1.9.5"
RECIPIENT_NONCE = "2.16.840.1.113733.1.9.6"
TRANSACTION_ID = "2.16.840.1.113733.1.9.7"
HASHES = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha512": hashes.SHA512}
KEY_SIZES = {"des": 8, "tripledes_3key": 24, "aes128_cbc": 16, "aes256_cbc": 32}


def _block(cipher: str, key: bytes) -> algorithms.AES | TripleDES:
    return (
        algorithms.AES(key)
        if cipher.startswith("aes")
        else TripleDES(key * 3 if len(key) == 8 else key)
    )


def _attribute(oid: str, value: core.Asn1Value) -> cms.CMSAttribute:
    if oid[0].isdigit():
        return cms.CMSAttribute({"type": oid, "values": [core.Any(value)]})
    return cms.CMSAttribute({"type": oid, "values": [value]})


@dataclass
class Request:
    """One pkiMessage to send, with what is needed to read its answer."""

    key: rsa.RSAPrivateKey
    signer: x509.Certificate
    message_type: int
    inner: bytes
    recipients: list[x509.Certificate]
    cipher: str = "aes256_cbc"
    digest: str = "sha256"
    transaction_id: str = field(default_factory=lambda: os.urandom(16).hex())
    nonce: bytes = field(default_factory=lambda: os.urandom(16))
    tamper_signature: bool = False
    garble_envelope: bool = False

    def envelope(self) -> bytes:
        key = os.urandom(KEY_SIZES[self.cipher])
        block = _block(self.cipher, key)
        iv = os.urandom(block.block_size // 8)
        padder = block_padding.PKCS7(block.block_size).padder()
        encryptor = Cipher(block, modes.CBC(iv)).encryptor()
        data = (
            encryptor.update(padder.update(self.inner) + padder.finalize()) + encryptor.finalize()
        )
        if self.garble_envelope:
            data = data[:-8] + bytes(8)
        infos = []
        for recipient in self.recipients:
            certificate = asn1_x509.Certificate.load(
                recipient.public_bytes(serialization.Encoding.DER)
            )
            public_key = recipient.public_key()
            assert isinstance(public_key, rsa.RSAPublicKey)
            infos.append(
                cms.RecipientInfo(
                    "ktri",
                    cms.KeyTransRecipientInfo(
                        {
                            "version": "v0",
                            "rid": cms.RecipientIdentifier(
                                "issuer_and_serial_number",
                                {
                                    "issuer": certificate.issuer,
                                    "serial_number": certificate.serial_number,
                                },
                            ),
                            "key_encryption_algorithm": {"algorithm": "rsaes_pkcs1v15"},
                            "encrypted_key": public_key.encrypt(key, padding.PKCS1v15()),
                        }
                    ),
                )
            )
        enveloped = cms.EnvelopedData(
            {
                "version": "v0",
                "recipient_infos": infos,
                "encrypted_content_info": {
                    "content_type": "data",
                    "content_encryption_algorithm": {"algorithm": self.cipher, "parameters": iv},
                    "encrypted_content": data,
                },
            }
        )
        return cms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump()

    def der(self) -> bytes:
        content = self.envelope()
        digest = hashes.Hash(HASHES[self.digest]())
        digest.update(content)
        attributes = cms.CMSAttributes(
            [
                _attribute("content_type", cms.ContentType("data")),
                _attribute("message_digest", core.OctetString(digest.finalize())),
                _attribute(MESSAGE_TYPE, core.PrintableString(str(self.message_type))),
                _attribute(TRANSACTION_ID, core.PrintableString(self.transaction_id)),
                _attribute(SENDER_NONCE, core.OctetString(self.nonce)),
            ]
        )
        signature = self.key.sign(
            b"\x31" + attributes.dump()[1:], padding.PKCS1v15(), HASHES[self.digest]()
        )
        if self.tamper_signature:
            signature = bytes([signature[0] ^ 1]) + signature[1:]
        signer = asn1_x509.Certificate.load(self.signer.public_bytes(serialization.Encoding.DER))
        signed = cms.SignedData(
            {
                "version": "v1",
                "digest_algorithms": [{"algorithm": self.digest}],
                "encap_content_info": {"content_type": "data", "content": content},
                "certificates": [signer],
                "signer_infos": [
                    {
                        "version": "v1",
                        "sid": cms.SignerIdentifier(
                            "issuer_and_serial_number",
                            {"issuer": signer.issuer, "serial_number": signer.serial_number},
                        ),
                        "digest_algorithm": {"algorithm": self.digest},
                        "signed_attrs": attributes,
                        "signature_algorithm": {"algorithm": "rsassa_pkcs1v15"},
                        "signature": signature,
                    }
                ],
            }
        )
        return cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump()


@dataclass(frozen=True)
class Reply:
    status: int
    fail_info: int | None
    transaction_id: str
    recipient_nonce: bytes
    digest: str
    cipher: str | None
    certificate: x509.Certificate | None


def _value(attribute: cms.CMSAttribute) -> object:
    value = attribute["values"][0]
    return core.load(value.dump()).native if isinstance(value, core.Any) else value.native


def read_reply(der: bytes, request: Request, ra: x509.Certificate) -> Reply:
    """Read a CertRep; the RA's signature over the attributes is verified first."""
    signed = cms.ContentInfo.load(der)["content"]
    signer = signed["signer_infos"][0]
    digest = signer["digest_algorithm"]["algorithm"].native
    ra_key = ra.public_key()
    assert isinstance(ra_key, rsa.RSAPublicKey)
    ra_key.verify(
        signer["signature"].native,
        b"\x31" + signer["signed_attrs"].dump()[1:],
        padding.PKCS1v15(),
        HASHES[digest](),
    )
    attributes = {a["type"].dotted: _value(a) for a in signer["signed_attrs"]}
    content = signed["encap_content_info"]["content"].native
    certificate, cipher = None, None
    if content:
        enveloped = cms.ContentInfo.load(content)["content"]
        ktri = enveloped["recipient_infos"][0].chosen
        key = request.key.decrypt(ktri["encrypted_key"].native, padding.PKCS1v15())
        eci = enveloped["encrypted_content_info"]
        cipher = eci["content_encryption_algorithm"]["algorithm"].native
        iv = eci["content_encryption_algorithm"]["parameters"].native
        block = _block(cipher, key)
        decryptor = Cipher(block, modes.CBC(iv)).decryptor()
        padded = decryptor.update(eci["encrypted_content"].native) + decryptor.finalize()
        unpadder = block_padding.PKCS7(block.block_size).unpadder()
        inner = unpadder.update(padded) + unpadder.finalize()
        (certificate,) = pkcs7.load_der_pkcs7_certificates(inner)
    fail = attributes.get(FAIL_INFO)
    return Reply(
        status=int(str(attributes[PKI_STATUS])),
        fail_info=int(str(fail)) if fail is not None else None,
        transaction_id=str(attributes[TRANSACTION_ID]),
        recipient_nonce=bytes(attributes[RECIPIENT_NONCE]),  # type: ignore[arg-type]
        digest=digest,
        cipher=cipher,
        certificate=certificate,
    )


def send(http: httpx.Client, path: str, request: Request, ra: x509.Certificate) -> Reply:
    """POST the request and read the answer (a 200 with a CertRep, or the test fails)."""
    answer = http.post(
        f"{path}?operation=PKIOperation",
        content=request.der(),
        headers={"Content-Type": "application/x-pki-message"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/x-pki-message"
    return read_reply(answer.content, request, ra)
