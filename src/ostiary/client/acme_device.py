"""``cert request --acme --key-store tpm --attest-key AK``: a device certificate over ACME
device-attest-01 (draft-ietf-acme-device-attest), the key made in the TPM and attested.

The order names the device by a ``permanent-identifier``, the one the AK's certificate
names (our attestation CA puts the SHA-256 of the TPM's endorsement key there); the server
offers device-attest-01 for it. The device answers with the ``tpm`` attestation object of
:mod:`ostiary.client.acme_attest`: the TPM key certified by the AK over SHA-256 of the key
authorization. Finalize sends a CSR signed in the TPM by that key, naming the device (no
subject: the draft's CSR carries the identifier as a subjectAltName only). The certificate
that comes back carries the provisioner's hardware policy OID.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from acme import challenges, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from josepy.json_util import field

from ostiary.client.acme_attest import tpm_challenge_payload
from ostiary.client.acme_order import AcmeOrder, acme_errors, open_account
from ostiary.client.enrollment import build_csr
from ostiary.client.tpm import AttestationKey, TpmPrivateKey
from ostiary.core.errors import BadRequest
from ostiary.core.jws import b64url
from ostiary.core.names import (
    PERMANENT_IDENTIFIER_OID,
    decode_other_name,
    permanent_identifier_name,
    sans_of,
)

DEVICE_ATTEST_01 = "device-attest-01"
#: The identifier type of draft-ietf-acme-device-attest (the library knows dns and ip).
PERMANENT_IDENTIFIER = messages.IdentifierType("permanent-identifier")


@challenges.ChallengeResponse.register
class DeviceAttestResponse(challenges.ChallengeResponse):
    """The device-attest-01 answer: ``{"attObj": base64url(CBOR attestation object)}``."""

    typ = DEVICE_ATTEST_01
    att_obj: str = field("attObj")


def device_identifiers(ak: AttestationKey) -> list[str]:
    """The permanent identifiers the AK's certificate names (the devices it vouches for)."""
    return [
        value
        for name in sans_of(ak.chain[0].extensions)
        if isinstance(name, x509.OtherName) and name.type_id == PERMANENT_IDENTIFIER_OID
        if (value := decode_other_name(name))
    ]


def order_attested_certificate(
    order: AcmeOrder, identifier: str, key: TpmPrivateKey, ak: AttestationKey
) -> list[x509.Certificate]:
    """The certificate (and chain) for ``key``, ordered for the device ``identifier``."""
    csr = build_csr(x509.Name([]), [permanent_identifier_name(identifier)], key)
    with acme_errors(order.directory_url):
        acme, account_key, _ = open_account(order)
        wanted = messages.Identifier(typ=PERMANENT_IDENTIFIER, value=identifier)
        placed = acme._post(  # the library's new_order takes DNS names and IPs only
            acme.directory["newOrder"],
            messages.NewOrder(identifiers=[wanted], profile=order.profile or ""),
        )
        body = messages.Order.from_json(placed.json())
        authorizations = [
            acme._authzr_from_response(acme._post_as_get(url), uri=url)
            for url in body.authorizations
        ]
        thumbprint = b64url(account_key.thumbprint(hash_function=hashes.SHA256))
        for authorization in authorizations:
            if authorization.body.status == messages.STATUS_VALID:
                continue
            challenge = _device_attest_challenge(authorization)
            token = str(challenge.chall.to_partial_json().get("token", ""))
            payload = tpm_challenge_payload(key, ak, f"{token}.{thumbprint}")
            acme.answer_challenge(challenge, DeviceAttestResponse(att_obj=payload["attObj"]))
        resource = messages.OrderResource(
            body=body,
            uri=placed.headers.get("Location"),
            authorizations=authorizations,
            csr_pem=csr.public_bytes(serialization.Encoding.PEM),
        )
        deadline = datetime.now() + timedelta(seconds=order.timeout)
        finished = acme.poll_and_finalize(resource, deadline=deadline)
    return x509.load_pem_x509_certificates(finished.fullchain_pem.encode("ascii"))


def _device_attest_challenge(
    authorization: messages.AuthorizationResource,
) -> messages.ChallengeBody:
    for challenge in authorization.body.challenges:
        if challenge.chall.to_partial_json().get("type") == DEVICE_ATTEST_01:
            return challenge
    name = authorization.body.identifier.value
    raise BadRequest(f"the ACME server offers no device-attest-01 challenge for {name}")


__all__ = [
    "DeviceAttestResponse",
    "device_identifiers",
    "order_attested_certificate",
]
