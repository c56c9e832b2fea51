"""The Authority (authorize -> issue -> record -> audit; renew, revoke) and what it publishes.

- :class:`Authority`: every certificate and revocation goes through it.
- :class:`CrlPublisher`: the issuing CA's CRL, rebuilt when a revocation committed anywhere.
- :class:`OcspService`: OCSP answers signed by a delegated responder it issues itself.
- :class:`RenewingCertificate`: the server's own short-lived certificates (TLS, OCSP).
- :func:`publish_root_crl`: the root's CRL, made while the root key is at hand.
"""

from ostiary.authority.authority import Authority
from ostiary.authority.ocsp_service import OcspService
from ostiary.authority.publisher import CrlPublisher, PublishedCrl
from ostiary.authority.root_crl import RootCrlFile, publish_root_crl, root_crl_due
from ostiary.authority.self_issued import RenewingCertificate, SelfIssued, SelfIssuedSpec

__all__ = [
    "Authority",
    "CrlPublisher",
    "OcspService",
    "PublishedCrl",
    "RenewingCertificate",
    "RootCrlFile",
    "SelfIssued",
    "SelfIssuedSpec",
    "publish_root_crl",
    "root_crl_due",
]
