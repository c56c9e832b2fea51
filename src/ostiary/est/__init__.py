"""EST (RFC 7030): the wire formats of ``/.well-known/est/NAME/`` (routes in
:mod:`ostiary.server.routes.est`, the proof of identity in :mod:`ostiary.provisioners.est`).
"""

from ostiary.est.wire import (
    CSR_ATTRS,
    PKCS7_CERTS_ONLY,
    PKCS7_MIME,
    certs_only_base64,
    csr_attributes_base64,
    read_base64_csr,
)

__all__ = [
    "CSR_ATTRS",
    "PKCS7_CERTS_ONLY",
    "PKCS7_MIME",
    "certs_only_base64",
    "csr_attributes_base64",
    "read_base64_csr",
]
