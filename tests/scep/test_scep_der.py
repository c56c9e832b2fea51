"""The CertRep's DER, written directly (``ostiary.scep.der``): every shape parses with
asn1crypto and re-encodes to the same bytes (so it is DER), and reads back as the device
reads it (the RA's signature, the status, the nonces, the issued certificate); and the
shortcuts of reading a pkiMessage (names compared by bytes first) keep its meaning.
"""

from __future__ import annotations

from functools import cache

import pytest
from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ostiary.scep import der
from ostiary.scep.message import CIPHERS, Envelope, FailInfo, read_envelope
from ostiary.scep.reply import PkiStatus, cert_rep
from tests.scep.client import Request, make_csr, read_reply, self_signed

FAILURE_TEXTS = ("", "the challenge password is wrong", "é" * 300)


@cache
def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def _ra() -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return self_signed(key, "Test SCEP RA"), key


def _is_der(encoded: bytes) -> None:
    """asn1crypto reads it and, re-encoding every part from what it read, gets it back."""
    assert cms.ContentInfo.load(encoded, strict=True).dump(force=True) == encoded


@pytest.mark.parametrize("digest", ["sha1", "sha256", "sha512"])
@pytest.mark.parametrize(
    ("status", "cipher", "text"),
    [
        *(pytest.param(PkiStatus.SUCCESS, c, "", id=f"success-{c}") for c in CIPHERS),
        *(pytest.param(PkiStatus.FAILURE, "", t, id=f"failure-{len(t)}") for t in FAILURE_TEXTS),
        pytest.param(PkiStatus.PENDING, "", "", id="pending"),
    ],
)
def test_every_cert_rep_shape_is_der_the_device_reads(
    status: PkiStatus, cipher: str, text: str, digest: str
) -> None:
    ra, ra_key = _ra()
    device = self_signed(_key(), "device é")
    envelope = Envelope("7" * 77, b"\x01" * 16, device, digest, cipher)
    issued = device if status == PkiStatus.SUCCESS else None
    encoded = cert_rep(
        envelope, status, ra_certificate=ra, ra_key=ra_key, issued=issued,
        fail_info=FailInfo.BAD_TIME if text else None, fail_text=text or None,
    )  # fmt: skip
    _is_der(encoded)
    content = cms.ContentInfo.load(encoded)["content"]["encap_content_info"]["content"].native
    if status == PkiStatus.SUCCESS:
        _is_der(content)
    else:
        assert content == b""
    request = Request(_key(), device, 19, b"", [ra], cipher=cipher or "aes256_cbc", digest=digest)
    reply = read_reply(encoded, request, ra)  # verifies the RA's signature first
    assert (reply.status, reply.transaction_id, reply.digest) == (status, "7" * 77, digest)
    assert reply.recipient_nonce == b"\x01" * 16
    assert reply.certificate == issued
    assert reply.fail_info == (FailInfo.BAD_TIME if text else FailInfo.BAD_REQUEST if
                               status == PkiStatus.FAILURE else None)  # fmt: skip


@pytest.mark.parametrize("length", [0, 1, 127, 128, 255, 256, 65535, 65536, 1 << 24])
def test_lengths_are_encoded_as_asn1crypto_does(length: int) -> None:
    assert der.tlv(der.OCTET_STRING, b"x" * length) == core.OctetString(b"x" * length).dump()


def test_issuer_and_serial_number_copies_the_certificate_bytes() -> None:
    certificate = self_signed(_key(), "device")
    parsed = asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))
    expected = cms.IssuerAndSerialNumber(
        {"issuer": parsed.issuer, "serial_number": parsed.serial_number}
    ).dump()
    assert der.issuer_and_serial_number(certificate) == expected


def test_a_transaction_id_beyond_latin1_is_not_a_pki_message() -> None:
    """It could not be echoed in the CertRep's PrintableString: refused up front (a 400)."""
    key = _key()
    csr = make_csr(key, "device", "secret").public_bytes(serialization.Encoding.DER)
    request = Request(key, self_signed(key, "device"), 19, csr, [_ra()[0]], transaction_id="A" * 6)
    utf8 = request.der().replace(b"\x13\x06AAAAAA", b"\x0c\x06" + "AAA€".encode())
    with pytest.raises(ValueError, match="Latin-1"):
        read_envelope(utf8)


def test_a_signer_named_in_another_string_type_is_still_found() -> None:
    """The signer's issuer is compared by bytes first, then by RFC 5280's name comparison."""
    key = _key()
    signer = self_signed(key, "device")  # a UTF8String CN
    request = Request(key, signer, 19, b"", [_ra()[0]])
    info = cms.ContentInfo.load(request.der())
    sid = info["content"]["signer_infos"][0]["sid"].chosen
    sid["issuer"] = asn1_x509.Name.build({"common_name": "device"}, use_printable=True)
    assert sid["issuer"].dump() != signer.issuer.public_bytes()
    assert read_envelope(info.dump(force=True)).envelope.signer == signer
