"""The parser fuzz targets: each feeds outside bytes to Ostiary's own entry points.

A target returns normally or raises one of the errors the entry point documents (an
:class:`~ostiary.core.errors.OstiaryError`, or ``ChallengeFailed`` for an ACME validator);
:data:`ALLOWED` names them. Anything else is a crash. Fixtures are deterministic (a CA key
derived from a fixed number) so that the seeds :mod:`seed` writes reach past the first
checks, e.g. an OCSP request whose issuer hashes match the responder's CA.
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ostiary.acme.jws import JOSE_JSON, import_account_key, parse_request
from ostiary.acme.validation.base import ChallengeContext, ChallengeFailed
from ostiary.acme.validation.device_attest import verify_device_attestation
from ostiary.config import load_config
from ostiary.core.ca import create_root_certificate
from ostiary.core.describe import describe_certificate, describe_csr
from ostiary.core.encoding import load_certificate, load_certificate_chain, load_csr
from ostiary.core.errors import OstiaryError
from ostiary.core.issuance import verify_csr
from ostiary.core.jws import b64url
from ostiary.core.names import parse_san, parse_subject, sans_of
from ostiary.core.ocsp import CertStatus, OcspResponder, ocsp_request_from_get_path
from ostiary.core.pkcs12 import load_pkcs12
from ostiary.est import read_base64_csr
from ostiary.gateway.target import canonical_target
from ostiary.provisioners import _jose
from ostiary.provisioners.jwk import ALGORITHM, TOKEN_HEADERS, JWKProvisioner
from ostiary.provisioners.scep_webhook import read_verdict
from ostiary.provisioners.tpm_statement import (
    AttestationStatement,
    check_key_attributes,
    public_key_of_area,
    tpm_name,
    unmarshal_tpm,
    verify_ak_signature,
)
from ostiary.scep.message import ScepFailure, open_message, read_envelope
from ostiary.ssh.certificate import load_ssh_public_key_line
from ostiary.ssh.wire import decode_blob, key_type_of_blob

NOW = datetime(2026, 1, 1, tzinfo=UTC)
AUDIENCE = "urn:ostiary:ca:fuzz:sign"
ACME_URL = "https://ca.fuzz/acme/fuzz/new-order"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
ALLOWED: tuple[type[BaseException], ...] = (OstiaryError, ChallengeFailed)


@functools.cache
def ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The fuzzing CA: the same key and name in every run, so seeds keep matching it."""
    key = ec.derive_private_key(0x0571A27, ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Ostiary fuzz CA")])
    return key, create_root_certificate(name, key, now=NOW - timedelta(days=1))


@functools.cache
def responder() -> OcspResponder:
    key, certificate = ca()
    return OcspResponder(
        issuer=certificate,
        responder_certificate=certificate,
        responder_key=key,
        validity=timedelta(hours=1),
    )


@functools.cache
def jwk_key() -> Any:
    return _jose.import_public_key(ca()[0].public_key())


@functools.cache
def scep_ra() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """The SCEP RA: a fixed RSA key (``fixtures/scep-ra-key.pem``, made for fuzzing only)
    and a certificate for it from the fuzz CA, so that the seeds stay encrypted to it.
    """
    key = serialization.load_pem_private_key((FIXTURES / "scep-ra-key.pem").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    ca_key, root = ca()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Ostiary fuzz RA")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(0x5CE9)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=3650))
        .sign(ca_key, hashes.SHA256())
    )
    return key, certificate


def certificate(data: bytes) -> None:
    """PEM or DER certificates and chains, as the CLI and the attestation routes read them."""
    describe_certificate(load_certificate(data))
    load_certificate_chain(data)


def csr(data: bytes) -> None:
    """A CSR as every enrollment route and ``ostiary ca sign`` read it, then checked."""
    request = load_csr(data)
    describe_csr(request)
    verify_csr(request)
    try:
        sans_of(request.extensions)
    except (ValueError, x509.DuplicateExtension):
        pass  # check_requested_names turns these into InvalidCSR


def jwt(data: bytes) -> None:
    """A compact JWS/JWT as a provisioner token: read, signature checked, claims checked."""
    token = data.decode("latin-1")
    unverified = _jose.peek(token, what="token", allowed_headers=TOKEN_HEADERS)
    _jose.verify_jws(unverified, jwk_key(), (ALGORITHM,), what="token")
    _jose.check_claims(
        unverified.claims,
        what="token",
        now=NOW,
        audience=AUDIENCE,
        max_lifetime=timedelta(minutes=5),
    )


def jwk(data: bytes) -> None:
    """A JWK provisioner's stored configuration (its public JWK), as the store reads it."""
    try:
        config = json.loads(data)
    except ValueError:
        return
    if isinstance(config, dict):
        JWKProvisioner.from_config("fuzz", config)


def ocsp(data: bytes) -> None:
    """An OCSP request by POST (DER) and by GET (the base64 path segment)."""
    lookup: Callable[[int], CertStatus] = lambda _serial: CertStatus.good()  # noqa: E731
    responder().respond(data, lookup=lookup, now=NOW)
    responder().respond(ocsp_request_from_get_path(data.decode("latin-1")), lookup=lookup, now=NOW)


def tpm(data: bytes) -> None:
    """TPMS_ATTEST, TPMT_PUBLIC and TPMT_SIGNATURE as a TPM attestation carries them; the
    first byte picks the structure, the rest is the structure.
    """
    tss = __import__("tpm2_pytss")
    kind, body = data[:1], data[1:]
    if kind == b"a":
        attest = unmarshal_tpm(tss.TPMS_ATTEST, body, "certify_info")
        bytes(attest.extraData), bytes(attest.attested.certify.name)
    elif kind == b"p":
        public = unmarshal_tpm(tss.TPMT_PUBLIC, body, "public_area")
        tpm_name(public, "public_area")
        public_key_of_area(tss, public)
        check_key_attributes(int(public.objectAttributes), require_pin=False)
    elif kind == b"s":
        verify_ak_signature(tss, ca()[1], b"signed", body)
    else:
        try:
            statement = json.loads(body)
        except ValueError:
            return  # the route's JSON parser (FastAPI) refuses it before we see it
        if isinstance(statement, dict):
            AttestationStatement.from_json(statement)


def pkcs12(data: bytes) -> None:
    """A PKCS #12 file (``ostiary cert import``-style input); the first byte picks the
    password: none, or a fixed one.
    """
    password = b"fuzz" if data[:1] == b"p" else None
    load_pkcs12(data[1:], password)


def gateway_head(data: bytes) -> None:
    """An HTTP/1.1 request head through the gateway's parser: see :mod:`gateway_head`."""
    from gateway_head import feed  # the event loop and downstream live there

    feed(data)


def target(data: bytes) -> None:
    """A request target through the gateway's canonicalization."""
    canonical_target(data)


@functools.cache
def _config_path() -> Path:
    return Path(tempfile.mkdtemp(prefix="ostiary-fuzz-")) / "ostiary.toml"


def config_toml(data: bytes) -> None:
    """A CA folder's ``ostiary.toml`` through :func:`ostiary.config.load_config`."""
    path = _config_path()
    path.write_bytes(data)
    load_config(path)


def device_attest(data: bytes) -> None:
    """An ACME device-attest-01 ``attObj`` (CBOR) through the validator."""
    context = ChallengeContext(
        challenge_type="device-attest-01",
        identifier_type="permanent-identifier",
        identifier_value="FUZZ0001",
        token="t" * 43,
        key_authorization="t.x",
        payload={"attObj": b64url(data)},
        policy={"attestation_roots": [ca()[1]]},
    )
    verify_device_attestation(context, now=NOW)


def est_csr(data: bytes) -> None:
    """An EST ``simpleenroll`` body: base64 PKCS#10 (RFC 8951), read and checked."""
    request = read_base64_csr(data)
    verify_csr(request)


def scep_webhook(data: bytes) -> None:
    """A SCEP challenge webhook's answer, and the names an allow gives, parsed."""
    verdict = read_verdict(data)
    parse_subject(verdict.subject)
    for name in verdict.sans:
        parse_san(name)


def acme_jws(data: bytes) -> None:
    """An ACME POST body (flattened JWS) as every ACME route reads it: shape and protected
    header checked, the embedded ``jwk`` imported, the signature and the payload read.
    """
    request = parse_request(JOSE_JSON, data, url=ACME_URL, key_by="either", nonce_required=False)
    key = import_account_key(request.jwk) if request.jwk is not None else jwk_key()
    request.payload_json(key)


def scep(data: bytes) -> None:
    """A SCEP pkiMessage as the responder reads it: :func:`read_envelope` (a
    :class:`ValueError` is the documented "not a pkiMessage"), then :func:`open_message`
    with the fixed RA (a :class:`ScepFailure` is answered as a FAILURE CertRep).
    """
    try:
        outer = read_envelope(data)
    except ValueError:
        return
    ra_key, ra_certificate = scep_ra()
    try:
        open_message(outer, ra_certificate=ra_certificate, ra_key=ra_key)
    except ScepFailure:
        pass


def ssh_key(data: bytes) -> None:
    """An ``authorized_keys``-style line as ``POST /ssh/.../sign`` and ``ostiary ssh sign``
    read it; the first byte ``b`` feeds the rest as a bare base64 key blob instead.
    """
    if data[:1] == b"b":
        key_type_of_blob(decode_blob(data[1:]))
    else:
        load_ssh_public_key_line(data)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "certificate": certificate,
    "csr": csr,
    "jwt": jwt,
    "jwk": jwk,
    "ocsp": ocsp,
    "tpm": tpm,
    "pkcs12": pkcs12,
    "gateway_head": gateway_head,
    "target": target,
    "config_toml": config_toml,
    "device_attest": device_attest,
    "est_csr": est_csr,
    "scep_webhook": scep_webhook,
    "acme_jws": acme_jws,
    "scep": scep,
    "ssh_key": ssh_key,
}


def run_one(name: str, data: bytes) -> None:
    """Run target ``name`` on ``data``; only an error in :data:`ALLOWED` is swallowed."""
    try:
        TARGETS[name](data)
    except ALLOWED:
        pass
