"""OpenSSH certificates and KRLs: wire formats only.

This package builds and signs certificates (``PROTOCOL.certkeys``) and writes key
revocation lists (``PROTOCOL.krl``). It imports only pyca/cryptography and ``core``: who
may get which certificate is decided in ``provisioners/``, the record kept by
``authority/ssh.py``, the HTTP routes in ``server/routes/ssh.py``.
"""

from ostiary.ssh.certificate import (
    MAX_PRINCIPALS,
    SUBJECT_KEY_TYPES,
    SSHCertificateFields,
    SSHCertificateType,
    SSHPublicKey,
    ca_public_key_line,
    certificate_line,
    certificate_tbs,
    load_ssh_public_key_line,
    sign_certificate,
    ssh_signature,
)
from ostiary.ssh.krl import build_krl
from ostiary.ssh.signature import renewal_message, verify_ssh_signature

__all__ = [
    "MAX_PRINCIPALS",
    "SUBJECT_KEY_TYPES",
    "SSHCertificateFields",
    "SSHCertificateType",
    "SSHPublicKey",
    "build_krl",
    "ca_public_key_line",
    "certificate_line",
    "certificate_tbs",
    "load_ssh_public_key_line",
    "renewal_message",
    "sign_certificate",
    "ssh_signature",
    "verify_ssh_signature",
]
