"""The device side of our attestation CA: ``ostiary tpm ak enroll`` (docs/tpm.md).

:func:`enroll_attestation_key` reads the TPM's endorsement key (EK) certificate from its NV
memory (TCG EK Credential Profile indices: RSA 2048, else ECC P-256), recreates the EK from
its standard template, sends both with the AK's public area to the CA
(``POST /attestation/ak``), opens the CA's challenge with TPM2_ActivateCredential (the EK
decrypts it, the TPM releases it only to the loaded AK of the right name; the EK's use is
authorized by a PolicySecret session on the endorsement hierarchy) and sends the secret back
(``POST /attestation/ak/certificate``) for the AK certificate. Every transient handle and
the session are flushed, whatever happens.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ostiary._tss import import_tss
from ostiary.client.tpm import TpmPrivateKey, loaded_keys, open_tpm, tpm_error
from ostiary.core.errors import BadRequest, Unavailable

if TYPE_CHECKING:
    from ostiary.client.api import IssuedCertificate, OstiaryClient

#: The EK kinds whose certificate we look for, in this order (low-range NV indices).
EK_TYPES = ("EK-RSA2048", "EK-ECC256")


def _tss() -> Any:
    return import_tss("TPM attestation keys")


@dataclass(frozen=True)
class EndorsementKey:
    """The TPM's EK certificate and the EK's public area (what the CA encrypts to)."""

    certificate: x509.Certificate
    template: Any
    public_area: bytes


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@contextmanager
def _endorsement_primary(context: Any, template: Any) -> Iterator[tuple[Any, Any]]:
    tss = _tss()
    try:
        handle, public, _, _, _ = context.create_primary(
            tss.TPM2B_SENSITIVE_CREATE(), template, tss.ESYS_TR.ENDORSEMENT
        )
    except tss.TSS2_Exception as exc:
        raise tpm_error(exc, "recreating the TPM's endorsement key") from None
    try:
        yield handle, public
    finally:
        context.flush_context(handle)


def read_endorsement_key(tcti: str | None) -> EndorsementKey:
    """The EK certificate from NV memory and the EK's public area (recreated, then flushed)."""
    tss = _tss()
    from tpm2_pytss.utils import NVReadEK, create_ek_template

    with open_tpm(tcti) as context:
        reader = NVReadEK(context)
        found: tuple[bytes, Any] | None = None
        for kind in EK_TYPES:
            try:
                der, template = create_ek_template(kind, reader)
            except (ValueError, tss.TSS2_Exception):
                continue
            if der:
                found = (bytes(der), template)
                break
        if found is None:
            raise Unavailable(
                "this TPM has no EK certificate in its NV memory (RSA 2048 or ECC P-256): "
                "its manufacturer did not provision one"
            )
        der, template = found
        try:
            certificate = x509.load_der_x509_certificate(der)
        except ValueError:
            raise Unavailable("the TPM's EK certificate in NV memory is not DER") from None
        with _endorsement_primary(context, template) as (_, public):
            area = bytes(public.publicArea.marshal())
    return EndorsementKey(certificate, template, area)


def activate_credential(
    ak: TpmPrivateKey, ek: EndorsementKey, credential_blob: bytes, encrypted_secret: bytes
) -> bytes:
    """TPM2_ActivateCredential: the secret the CA encrypted to this EK for this AK."""
    tss = _tss()
    try:
        blob, _ = tss.TPM2B_ID_OBJECT.unmarshal(credential_blob)
        secret, _ = tss.TPM2B_ENCRYPTED_SECRET.unmarshal(encrypted_secret)
    except (tss.TSS2_Exception, ValueError, TypeError):
        raise BadRequest("the CA's challenge is not a TPM credential") from None
    with (
        open_tpm(ak.tcti) as context,
        loaded_keys(context, (ak._blob, ak._pin), tcti=ak.tcti) as (ak_handle,),
        _endorsement_primary(context, ek.template) as (ek_handle, _),
    ):
        session = context.start_auth_session(
            tss.ESYS_TR.NONE,
            tss.ESYS_TR.NONE,
            tss.TPM2_SE.POLICY,
            tss.TPMT_SYM_DEF(algorithm=tss.TPM2_ALG.NULL),
            tss.TPM2_ALG.SHA256,
        )
        try:
            context.policy_secret(tss.ESYS_TR.ENDORSEMENT, session, b"", b"", b"", 0)
            opened = context.activate_credential(
                ak_handle, ek_handle, blob, secret, session1=tss.ESYS_TR.PASSWORD, session2=session
            )
        except tss.TSS2_Exception as exc:
            raise tpm_error(exc, "opening the CA's challenge (ActivateCredential)") from None
        finally:
            context.flush_context(session)
    return bytes(opened)


def enroll_attestation_key(
    client: OstiaryClient, ak: TpmPrivateKey, *, tcti: str | None
) -> IssuedCertificate:
    """Both round trips of the attestation CA; the AK certificate and its issuers."""
    ek = read_endorsement_key(tcti)
    enrollment = {
        "ek_chain": [_b64(ek.certificate.public_bytes(serialization.Encoding.DER))],
        "ek_public": _b64(ek.public_area),
        "ak_public": _b64(ak.public_area),
    }
    challenge = client.attestation_key_challenge(enrollment)
    try:
        blob = base64.b64decode(challenge["credential_blob"], validate=True)
        encrypted = base64.b64decode(challenge["encrypted_secret"], validate=True)
    except ValueError:
        raise BadRequest("the CA's challenge is not base64") from None
    secret = activate_credential(ak, ek, blob, encrypted)
    return client.attestation_key_certificate(enrollment, _b64(secret), ak.public_key())


__all__ = [
    "EK_TYPES",
    "EndorsementKey",
    "activate_credential",
    "enroll_attestation_key",
    "read_endorsement_key",
]
