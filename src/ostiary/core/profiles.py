"""Certificate profiles: named, documented sets of extensions for leaf certificates.

A profile says what a certificate is *for* (key usage, extended key usage) and which kinds of
names it may carry. It never decides *which* names: that is the authorization's job. Every
leaf also gets SKI and AKI, and CRL distribution point, AIA and certificate policies when the
issuing CA has them (see :mod:`ostiary.core.issuance`).

==========  ==============================================================================
client      KU digitalSignature (critical), EKU clientAuth. Any names.
user        as client, with UPN otherName and e-mail SANs (Windows logon, Entra CBA);
            optionally the Smart Card Logon EKU (1.3.6.1.4.1.311.20.2.2).
server      KU digitalSignature (+ keyEncipherment for RSA), EKU serverAuth; DNS/IP SANs.
device      KU digitalSignature, EKU clientAuth; a URI or permanentIdentifier SAN required.
attestation-key  KU digitalSignature, EKU tcg-kp-AIKCertificate (2.23.133.8.3): a TPM's
            attestation key, certified by our attestation CA; the TPM as a directoryName
            SAN, its EK hash as URI and permanentIdentifier (docs/tpm.md).
ocsp        KU digitalSignature, EKU OCSPSigning and id-pkix-ocsp-nocheck (RFC 6960 4.2.2.2.1)
            for a delegated OCSP responder.
scep-ra     KU digitalSignature + keyEncipherment, EKU id-kp-cmcRA: a SCEP provisioner's RA.
profile-signing  KU digitalSignature, EKU emailProtection: signs Apple configuration profiles.
==========  ==============================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from ostiary.core.errors import BadRequest, NameNotAuthorized
from ostiary.core.names import PERMANENT_IDENTIFIER_OID, UPN_OID

#: Microsoft Smart Card Logon EKU.
SMART_CARD_LOGON_OID = ObjectIdentifier("1.3.6.1.4.1.311.20.2.2")
#: TCG tcg-kp-AIKCertificate: the certificate of a TPM attestation key.
AIK_CERTIFICATE_OID = ObjectIdentifier("2.23.133.8.3")
#: id-kp-cmcRA (RFC 6402): the EKU of a registration authority such as the SCEP RA.
CMC_RA_OID = ObjectIdentifier("1.3.6.1.5.5.7.3.28")

_DNS_IP = (x509.DNSName, x509.IPAddress)


@dataclass(frozen=True)
class ProfileOptions:
    """Choices a profile leaves open, set by the authorization."""

    smart_card_logon: bool = False


@dataclass(frozen=True)
class Profile:
    """One named set of leaf extensions; see the module docstring for the table."""

    name: str
    description: str
    extended_key_usages: tuple[ObjectIdentifier, ...]
    allowed_name_kinds: tuple[str, ...]
    requires_name_kind: tuple[str, ...] = ()
    ocsp_no_check: bool = False
    #: keyEncipherment for RSA keys (a SCEP RA: devices encrypt their requests to it).
    key_encipherment: bool = False

    def check_names(self, names: list[x509.GeneralName]) -> None:
        """Refuse names of a kind this profile does not carry, or a missing required kind."""
        kinds = [_kind_of(name) for name in names]
        for kind in kinds:
            if kind not in self.allowed_name_kinds:
                raise NameNotAuthorized(
                    f"profile {self.name!r} does not allow {kind} names", profile=self.name
                )
        if self.requires_name_kind and not any(k in self.requires_name_kind for k in kinds):
            wanted = " or ".join(self.requires_name_kind)
            raise BadRequest(f"profile {self.name!r} requires a {wanted} name", profile=self.name)

    def key_usage(self, public_key: CertificatePublicKeyTypes) -> x509.KeyUsage:
        """DigitalSignature always; keyEncipherment too for RSA server keys (TLS 1.2 RSA kex)."""
        rsa_key = isinstance(public_key, rsa.RSAPublicKey)
        rsa_server = rsa_key and (self.name == "server" or self.key_encipherment)
        return x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=rsa_server,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        )

    def extensions(
        self, public_key: CertificatePublicKeyTypes, options: ProfileOptions
    ) -> list[tuple[x509.ExtensionType, bool]]:
        """The profile's own extensions as ``(value, critical)`` pairs."""
        usages = list(self.extended_key_usages)
        if options.smart_card_logon:
            if self.name != "user":
                raise BadRequest("the Smart Card Logon usage is only for the 'user' profile")
            usages.append(SMART_CARD_LOGON_OID)
        result: list[tuple[x509.ExtensionType, bool]] = [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (self.key_usage(public_key), True),
            (x509.ExtendedKeyUsage(usages), False),
        ]
        if self.ocsp_no_check:
            result.append((x509.OCSPNoCheck(), False))
        return result


def _kind_of(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DNSName):
        return "dns"
    if isinstance(name, x509.IPAddress):
        return "ip"
    if isinstance(name, x509.RFC822Name):
        return "email"
    if isinstance(name, x509.UniformResourceIdentifier):
        return "uri"
    if isinstance(name, x509.OtherName) and name.type_id == UPN_OID:
        return "upn"
    if isinstance(name, x509.OtherName) and name.type_id == PERMANENT_IDENTIFIER_OID:
        return "pid"
    if isinstance(name, x509.DirectoryName):
        return "dirname"
    return "other"


_ALL_KINDS = ("dns", "ip", "email", "uri", "upn", "pid")

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            name="client",
            description="TLS client authentication (mTLS) for a person, service or device",
            extended_key_usages=(ExtendedKeyUsageOID.CLIENT_AUTH,),
            allowed_name_kinds=_ALL_KINDS,
        ),
        Profile(
            name="user",
            description="a person: UPN and e-mail SANs for Windows logon and Entra CBA",
            extended_key_usages=(ExtendedKeyUsageOID.CLIENT_AUTH,),
            allowed_name_kinds=("upn", "email", "uri"),
        ),
        Profile(
            name="server",
            description="a TLS server: DNS names and IP addresses",
            extended_key_usages=(ExtendedKeyUsageOID.SERVER_AUTH,),
            allowed_name_kinds=("dns", "ip"),
            requires_name_kind=("dns", "ip"),
        ),
        Profile(
            name="device",
            description="a device: client authentication, named by URI or permanent identifier",
            extended_key_usages=(ExtendedKeyUsageOID.CLIENT_AUTH,),
            allowed_name_kinds=("uri", "pid", "dns", "ip"),
            requires_name_kind=("uri", "pid"),
        ),
        Profile(
            name="attestation-key",
            description="a TPM attestation key, named by its TPM and EK (tcg-kp-AIKCertificate)",
            extended_key_usages=(AIK_CERTIFICATE_OID,),
            allowed_name_kinds=("uri", "pid", "dirname"),
            requires_name_kind=("pid",),
        ),
        Profile(
            name="scep-ra",
            description="a SCEP RA: devices encrypt to it, it signs the answers (id-kp-cmcRA)",
            extended_key_usages=(CMC_RA_OID,),
            allowed_name_kinds=(),
            key_encipherment=True,
        ),
        Profile(
            name="profile-signing",
            description="signs Apple configuration profiles (CMS SignedData): "
            "id-kp-emailProtection, the usage openssl smime -verify and iOS accept",
            extended_key_usages=(ExtendedKeyUsageOID.EMAIL_PROTECTION,),
            allowed_name_kinds=(),
        ),
        Profile(
            name="ocsp",
            description="a delegated OCSP responder (OCSPSigning, ocsp-nocheck)",
            extended_key_usages=(ExtendedKeyUsageOID.OCSP_SIGNING,),
            allowed_name_kinds=_ALL_KINDS,
            ocsp_no_check=True,
        ),
    )
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(PROFILES)
        raise BadRequest(f"unknown profile {name!r}: use one of {known}", profile=name) from None
