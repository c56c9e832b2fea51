"""A lean SCEP client for bench/scep_enroll.py: asyncio, one process, one core's worth of work.

micromdm's ``scepclient`` is a Go process per enrollment: ~10 ms of client CPU each (most of
it starting the process), so on the one client core it capped both servers at ~90
enrollments/s and the bench measured the client. This client does what scepclient does, in
one asyncio loop (uvloop when installed), N workers each on its own keep-alive HTTP/1.1
connection, plain HTTP as scepclient uses (bench/http_lean.py, shared with the ACME client).

One enrollment (RFC 8894), what a device does and what scepclient does:

- GetCACaps (``POSTPKIOperation`` must be there: both servers say it);
- GetCACert, the certificates parsed and the recipient picked as RFC 8894 2.2 says: from a
  PKCS#7 of several, the RA certificate (not a CA, with keyEncipherment); else the one CA
  certificate;
- PKCSReq over POST: the CSR (carrying the challenge password) enveloped with a fresh
  single-DES key to the recipient's RSA key, signed with SHA-1 by the device's self-signed
  certificate, written as DER by the server's own writer (``ostiary.scep.der``, whose
  ``signed_data`` and envelope the CertRep uses too). That is what scepclient 2.1.0 sends
  whatever GetCACaps offers (AES and SHA-256 included: checked by capturing its PKCSReq),
  so both clients ask the servers for the same work;
- the CertRep: messageType CertRep, status SUCCESS, the transactionID and the nonce ours, the
  signer's signature over the attributes and the content's digest verified (the signer found
  by issuer and serial among GetCACert's certificates), the envelope decrypted with the
  device's key and the certificate for the device's key parsed out of it.

The device's RSA 2048 key, its self-signed certificate and its CSR are made beforehand,
untimed (:func:`make_device`), as a phone makes its key before it enrolls.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from asn1crypto import cms, core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as block_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import AttributeOID, NameOID

from ostiary.scep import der
from ostiary.scep.message import (
    FAIL_INFO,
    MESSAGE_TYPE,
    PKI_STATUS,
    RECIPIENT_NONCE,
    SENDER_NONCE,
    TRANSACTION_ID,
    Envelope,
    cipher_algorithm,
)
from ostiary.scep.message import _encrypted_content as encrypted_content  # primitive or Go's BER
from ostiary.scep.reply import _envelope as envelope  # the CertRep's, to any recipient

sys.path.insert(0, str(Path(__file__).parent))
from http_lean import Connection, Outcome, Response, run_loop, timed_workers  # bench/http_lean.py

PKI_MESSAGE = "application/x-pki-message"
PKCS_REQ, CERT_REP, SUCCESS = "19", "3", "0"
MESSAGE_DIGEST = "1.2.840.113549.1.9.4"  # RFC 5652 11.2
_DIGESTS = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha512": hashes.SHA512}


@dataclass(frozen=True)
class Device:
    """What a device holds before it enrolls (made untimed)."""

    key: rsa.RSAPrivateKey
    sid: bytes  # its self-signed certificate's IssuerAndSerialNumber (DER)
    certificates: bytes  # the SignedData's [0] certificates: that certificate (DER)
    csr_der: bytes  # carrying the challenge password
    transaction_id: str  # RFC 8894 3.2.1.1: a hash of the public key


def make_csr(
    key: rsa.RSAPrivateKey, cn: str, challenge: str | None
) -> x509.CertificateSigningRequest:
    """A CSR for ``cn``, with the challenge password attribute unless ``challenge`` is None."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    )
    if challenge is not None:
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
    return builder.sign(key, hashes.SHA256())


def self_signed(key: rsa.RSAPrivateKey, cn: str) -> x509.Certificate:
    """A device's self-signed certificate, its signer in a PKCSReq (RFC 8894 2.3)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def make_device(
    key: rsa.RSAPrivateKey, cn: str, challenge: str, signer: x509.Certificate | None = None
) -> Device:
    """A device with ``key``: a CSR for ``cn`` carrying ``challenge``, and ``signer`` (its
    self-signed certificate, made here if not given: one key may enroll with two servers).
    """
    signer = signer or self_signed(key, cn)
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Device(
        key,
        der.issuer_and_serial_number(signer),
        der.tlv(der.CONTEXT_0, signer.public_bytes(serialization.Encoding.DER)),
        make_csr(key, cn, challenge).public_bytes(serialization.Encoding.DER),
        hashlib.sha256(public).hexdigest(),
    )


# --------------------------------------------------------------------------- GetCACert


def pick_recipient(answer: Response) -> list[x509.Certificate]:
    """GetCACert's certificates, the one to encrypt to first (RFC 8894 2.2, 4.2.1)."""
    kind = answer.headers.get(b"content-type", b"").split(b";")[0].strip()
    if kind == b"application/x-x509-ca-cert":  # the CA alone, a bare certificate
        return [x509.load_der_x509_certificate(answer.body)]
    if kind != b"application/x-x509-ca-ra-cert":
        raise RuntimeError(f"GetCACert answered {kind.decode(errors='replace')!r}")
    certificates = pkcs7.load_der_pkcs7_certificates(answer.body)
    if len(certificates) == 1:
        return certificates
    ras = [c for c in certificates if not _is_ca(c)]
    enciphering = [c for c in ras if _enciphers(c)]
    if not (enciphering or ras):
        raise RuntimeError(f"GetCACert: {len(certificates)} certificates and no RA among them")
    recipient = (enciphering or ras)[0]
    return [recipient, *(c for c in certificates if c is not recipient)]


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _enciphers(certificate: x509.Certificate) -> bool:
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True  # no restriction
    return usage.key_encipherment


# --------------------------------------------------------------------------- PKCSReq


def pkcs_req(device: Device, recipient: x509.Certificate, nonce: bytes) -> bytes:
    """The PKCSReq pkiMessage (RFC 8894 3.3.1): the CSR enveloped with a fresh single-DES key
    to ``recipient``, signed (SHA-1) by the device's self-signed certificate, as scepclient
    sends it. Written as DER with the server's own writer (``ostiary.scep.der``, its
    CertRep's envelope): built as asn1crypto objects it cost ~1.4 ms of the client's ~2.9.
    """
    if not isinstance(recipient.public_key(), rsa.RSAPublicKey):
        raise RuntimeError("the SCEP recipient's key is not RSA")
    to = Envelope(transaction_id="", sender_nonce=b"", signer=recipient, digest="", cipher="des")
    enveloped = envelope(device.csr_der, to)
    attributes = der.set_of(
        _attribute(_CONTENT_TYPE, _DATA),
        _attribute(_MESSAGE_DIGEST, der.tlv(der.OCTET_STRING, hashlib.sha1(enveloped).digest())),
        _attribute(_MESSAGE_TYPE, der.tlv(der.PRINTABLE_STRING, PKCS_REQ.encode())),
        _attribute(_TRANSACTION_ID, der.tlv(der.PRINTABLE_STRING, device.transaction_id.encode())),
        _attribute(_SENDER_NONCE, der.tlv(der.OCTET_STRING, nonce)),
    )
    # RFC 5652 5.4: the signature covers the attributes as a SET OF.
    signature = device.key.sign(attributes, padding.PKCS1v15(), hashes.SHA1())
    return der.signed_data(
        enveloped,
        attributes,
        signature,
        sid=device.sid,
        certificates=device.certificates,
        digest_algorithm=_SHA1,
        signature_algorithm=_SHA1_RSA,
    )


def _attribute(kind: bytes, value: bytes) -> bytes:
    """An Attribute with one value (RFC 5652 5.3)."""
    return der.tlv(der.SEQUENCE, kind, der.tlv(der.SET, value))


_DATA = der.DATA
_CONTENT_TYPE, _MESSAGE_DIGEST = der.oid("1.2.840.113549.1.9.3"), der.oid(MESSAGE_DIGEST)
_MESSAGE_TYPE, _TRANSACTION_ID = der.oid(MESSAGE_TYPE), der.oid(TRANSACTION_ID)
_SENDER_NONCE = der.oid(SENDER_NONCE)
_SHA1 = der.algorithm(der.oid("1.3.14.3.2.26"))
_SHA1_RSA = der.algorithm(der.oid("1.2.840.113549.1.1.5"))  # sha1WithRSAEncryption, as scepclient


# --------------------------------------------------------------------------- CertRep


def _attribute_values(signer_info: cms.SignerInfo) -> dict[str, object]:
    found: dict[str, object] = {}
    for attribute in signer_info["signed_attrs"]:
        value = attribute["values"][0]
        is_any = isinstance(value, core.Any)
        found[attribute["type"].dotted] = core.load(value.dump()).native if is_any else value.native
    return found


def read_cert_rep(
    body: bytes, device: Device, ca_certificates: list[x509.Certificate], nonce: bytes
) -> x509.Certificate:
    """The certificate a SUCCESS CertRep (RFC 8894 3.3.2) carries for ``device``; raises on
    any other answer, a signature that does not verify, or an envelope that does not open.
    """
    info = cms.ContentInfo.load(body)
    if info["content_type"].native != "signed_data":
        raise RuntimeError(f"CertRep is {info['content_type'].native}, not signed data")
    signed = info["content"]
    signer_info = signed["signer_infos"][0]
    attributes = _attribute_values(signer_info)
    if str(attributes.get(MESSAGE_TYPE)) != CERT_REP:
        raise RuntimeError(f"messageType {attributes.get(MESSAGE_TYPE)}, not CertRep")
    status = str(attributes.get(PKI_STATUS))
    if status != SUCCESS:
        raise RuntimeError(f"pkiStatus {status}, failInfo {attributes.get(FAIL_INFO)}")
    if attributes.get(RECIPIENT_NONCE) != nonce:
        raise RuntimeError("CertRep's recipientNonce is not our senderNonce")
    if str(attributes.get(TRANSACTION_ID)) != device.transaction_id:
        raise RuntimeError("CertRep's transactionID is not ours")
    content = signed["encap_content_info"]["content"].native
    digest = _DIGESTS[signer_info["digest_algorithm"]["algorithm"].native]
    hashed = hashes.Hash(digest())
    hashed.update(content)
    if attributes.get(MESSAGE_DIGEST) != hashed.finalize():
        raise RuntimeError("CertRep's messageDigest does not match its content")
    signer_key = _signer(signer_info, ca_certificates).public_key()
    if not isinstance(signer_key, rsa.RSAPublicKey):
        raise RuntimeError("the CertRep's signer key is not RSA")
    signer_key.verify(  # raises InvalidSignature
        signer_info["signature"].native,
        b"\x31" + signer_info["signed_attrs"].dump()[1:],
        padding.PKCS1v15(),
        digest(),
    )
    inner = _open_envelope(cms.ContentInfo.load(content)["content"], device.key)
    public = device.key.public_key().public_numbers()
    for certificate in pkcs7.load_der_pkcs7_certificates(inner):
        key = certificate.public_key()
        if isinstance(key, rsa.RSAPublicKey) and key.public_numbers() == public:
            return certificate
    raise RuntimeError("no certificate for the device's key in the CertRep")


def _signer(signer_info: cms.SignerInfo, candidates: list[x509.Certificate]) -> x509.Certificate:
    sid = signer_info["sid"].chosen
    issuer, serial = sid["issuer"].dump(), sid["serial_number"].native
    for certificate in candidates:
        if certificate.serial_number == serial and certificate.issuer.public_bytes() == issuer:
            return certificate
    raise RuntimeError("the CertRep's signer is none of GetCACert's certificates")


def _open_envelope(enveloped: cms.EnvelopedData, key: rsa.RSAPrivateKey) -> bytes:
    recipient = enveloped["recipient_infos"][0].chosen
    content_key = key.decrypt(recipient["encrypted_key"].native, padding.PKCS1v15())
    encrypted = enveloped["encrypted_content_info"]
    algorithm = encrypted["content_encryption_algorithm"]
    name, iv = algorithm["algorithm"].native, algorithm["parameters"].native
    block = cipher_algorithm(name, content_key)
    decryptor = Cipher(block, modes.CBC(iv)).decryptor()
    padded = decryptor.update(encrypted_content(encrypted.contents)) + decryptor.finalize()
    unpadder = block_padding.PKCS7(block.block_size).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


# --------------------------------------------------------------------------- one enrollment


async def enroll(connection: Connection, url: str, device: Device) -> x509.Certificate:
    """GetCACaps, GetCACert, PKCSReq over POST, the CertRep read: the device's certificate."""
    caps = await connection.request("GET", f"{url}?operation=GetCACaps")
    if caps.status != 200 or b"POSTPKIOperation" not in caps.body:
        raise RuntimeError(f"GetCACaps: {caps.status} {caps.body[:200]!r}")
    answer = await connection.request("GET", f"{url}?operation=GetCACert")
    if answer.status != 200:
        raise RuntimeError(f"GetCACert: {answer.status} {answer.body[:200]!r}")
    certificates = pick_recipient(answer)
    nonce = os.urandom(16)
    request = pkcs_req(device, certificates[0], nonce)
    reply = await connection.request("POST", f"{url}?operation=PKIOperation", request)
    kind = reply.headers.get(b"content-type", b"")
    if reply.status != 200 or not kind.startswith(PKI_MESSAGE.encode()):
        raise RuntimeError(f"PKIOperation: {reply.status} {reply.body[:200]!r}")
    return read_cert_rep(reply.body, device, certificates, nonce)


async def _run(
    url: str, concurrency: int, devices: list[Device], meter: Callable[[], tuple[float, float]]
) -> Outcome:
    connections = [Connection(url, post_type=PKI_MESSAGE) for _ in range(concurrency)]

    async def one(worker: int, number: int) -> None:
        await enroll(connections[worker], url, devices[number])

    def reset(worker: int) -> None:
        connections[worker].close()  # a half-read answer must not be read next

    try:
        return await timed_workers(concurrency, len(devices), one, reset, connections, meter)
    finally:
        await asyncio.gather(*(connection.aclose() for connection in connections))


def run_enrollments(
    url: str,
    concurrency: int,
    devices: list[Device],
    *,
    meter: Callable[[], tuple[float, float]] = lambda: (0.0, 0.0),
) -> Outcome:
    """Enroll every device of ``devices`` at ``url`` (the SCEP path, e.g.
    ``http://127.0.0.1:8080/scep/devices``), ``concurrency`` at a time; ``meter`` (the
    server's CPU seconds, its threads' wait for a core) is read before and after.
    """
    return run_loop(_run(url, concurrency, devices, meter))
