"""The Python SDK of an Ostiary CA: enrollment, renewal and revocation over its HTTP API.

``OstiaryClient`` talks to one CA, trusting only its root; ``bootstrap_client_config`` learns
that root from a URL and a fingerprint; ``request_certificate`` makes a key here and has it
certified; ``RenewalPolicy`` and ``RenewalDaemon`` keep a certificate renewed.
"""

from ostiary.client.api import IssuedCertificate, OstiaryClient, Via
from ostiary.client.bootstrap import bootstrap_client_config
from ostiary.client.config import ClientConfig, client_config_dir, load_client_config
from ostiary.client.credentials import CredentialSource, OneTimeToken
from ostiary.client.enrollment import Enrollment, build_csr, rekey_csr, request_certificate
from ostiary.client.errors import CAUnavailable, error_from_problem, is_transient
from ostiary.client.fingerprints import fingerprint_matches, normalize_fingerprint
from ostiary.client.renewal import (
    Backoff,
    RenewalDaemon,
    RenewalPolicy,
    Waker,
    parse_renewal_policy,
)

__all__ = [
    "Backoff",
    "CAUnavailable",
    "ClientConfig",
    "CredentialSource",
    "Enrollment",
    "IssuedCertificate",
    "OneTimeToken",
    "OstiaryClient",
    "RenewalDaemon",
    "RenewalPolicy",
    "Via",
    "Waker",
    "bootstrap_client_config",
    "build_csr",
    "client_config_dir",
    "error_from_problem",
    "fingerprint_matches",
    "is_transient",
    "load_client_config",
    "normalize_fingerprint",
    "parse_renewal_policy",
    "rekey_csr",
    "request_certificate",
]
