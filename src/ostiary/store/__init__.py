"""Persistence: SQLAlchemy models, repositories and Alembic migrations.

SQLite by default, PostgreSQL when several CA replicas share state. Open a :class:`Store`,
call :func:`migrate` once at start, then work inside ``store.transaction()`` with the
repositories, each of which takes the transaction's session::

    store = Store.from_url(sqlite_url_for("ca.db"))
    migrate(store.engine)
    with store.transaction() as session:
        record = CertificateRepository(session).add(cert, profile="device", provisioner="otp")
        AuditLog(session).append("certificate.issued", at=now, target=record.serial)
"""

from ostiary.store.acme import (
    AcmeAccount,
    AcmeAuthorization,
    AcmeChallenge,
    AcmeNonce,
    AcmeOrder,
    AcmeRepository,
)
from ostiary.store.acme_eab import AcmeEabKey, AcmeEabRepository
from ostiary.store.acme_renewal import AcmeRenewalRule, AcmeRenewalRules
from ostiary.store.attestation import AttestationNonce, AttestationNonceRepository
from ostiary.store.audit import (
    GENESIS_HASH,
    AuditChain,
    AuditFault,
    AuditLog,
    AuditVerification,
    entry_hash,
)
from ostiary.store.certificates import (
    REVOCATION_REASONS,
    CertificateRepository,
    RevocationStatus,
    certificate_values,
    issuer_key_id_of,
    key_is_compromised,
    mark_key_compromised,
    record_certificate,
    spki_sha256_of,
)
from ostiary.store.console import ConsoleEntry, ConsoleRepository, ServerSecret
from ostiary.store.crl_numbers import latest_crl, next_crl_number, save_latest_crl
from ostiary.store.database import Store, create_engine_for, sqlite_url_for
from ostiary.store.enrollment import (
    EnrollmentSecret,
    EnrollmentSecretRepository,
)
from ostiary.store.group_commit import (
    WRITE_DEADLINE,
    Batch,
    GroupCommit,
    Unit,
    WriteTimeout,
    database_unreachable,
)
from ostiary.store.issuers import (
    active_intermediate_key_id,
    find_issuer,
    issuer_records,
    make_active,
    record_issuer,
    revoke_issuer,
    revoked_issuer_entries,
)
from ostiary.store.migrate import current_revision, head_revision, migrate
from ostiary.store.models import (
    AuditEntry,
    AuditHead,
    Base,
    CertificateRecord,
    CertificateStatus,
    CompromisedKey,
    CrlNumber,
    IssuerRecord,
    LatestCrl,
    ProvisionerRecord,
    SSHCertificateRecord,
    UsedToken,
)
from ostiary.store.provisioners import ProvisionerRepository, provisioner_version
from ostiary.store.replicas import Replica, ReplicaRecord, ReplicaRepository
from ostiary.store.requests import (
    CertificateRequest,
    Officer,
    OfficerCertificate,
    OfficerRepository,
    RequestRepository,
    RequestStatus,
    mark_request_issued,
)
from ostiary.store.sans import subject_alt_names
from ostiary.store.scep import (
    ChallengeRow,
    ScepChallenge,
    ScepRepository,
    ScepTransaction,
    TransactionState,
    read_request_rows,
    spend_challenge_in,
    transaction_values,
)
from ostiary.store.signing_keys import SigningKeyRecord, SigningKeyRepository, SigningKeyVersion
from ostiary.store.snapshot import load_snapshot, snapshot_database
from ostiary.store.ssh import SSHCertificateRepository
from ostiary.store.tokens import TokenRepository, TokenSpend, TokenUse, spend_tokens

__all__ = [
    "GENESIS_HASH",
    "REVOCATION_REASONS",
    "WRITE_DEADLINE",
    "AcmeAccount",
    "AcmeAuthorization",
    "AcmeChallenge",
    "AcmeEabKey",
    "AcmeEabRepository",
    "AcmeNonce",
    "AcmeOrder",
    "AcmeRenewalRule",
    "AcmeRenewalRules",
    "AcmeRepository",
    "AttestationNonce",
    "AttestationNonceRepository",
    "AuditChain",
    "AuditEntry",
    "AuditFault",
    "AuditHead",
    "AuditLog",
    "AuditVerification",
    "Base",
    "Batch",
    "CertificateRecord",
    "CertificateRepository",
    "CertificateRequest",
    "CertificateStatus",
    "ChallengeRow",
    "CompromisedKey",
    "ConsoleEntry",
    "ConsoleRepository",
    "CrlNumber",
    "EnrollmentSecret",
    "EnrollmentSecretRepository",
    "GroupCommit",
    "IssuerRecord",
    "LatestCrl",
    "Officer",
    "OfficerCertificate",
    "OfficerRepository",
    "ProvisionerRecord",
    "ProvisionerRepository",
    "Replica",
    "ReplicaRecord",
    "ReplicaRepository",
    "RequestRepository",
    "RequestStatus",
    "RevocationStatus",
    "SSHCertificateRecord",
    "SSHCertificateRepository",
    "ScepChallenge",
    "ScepRepository",
    "ScepTransaction",
    "ServerSecret",
    "SigningKeyRecord",
    "SigningKeyRepository",
    "SigningKeyVersion",
    "Store",
    "TokenRepository",
    "TokenSpend",
    "TokenUse",
    "TransactionState",
    "Unit",
    "UsedToken",
    "WriteTimeout",
    "active_intermediate_key_id",
    "certificate_values",
    "create_engine_for",
    "current_revision",
    "database_unreachable",
    "entry_hash",
    "find_issuer",
    "head_revision",
    "issuer_key_id_of",
    "issuer_records",
    "key_is_compromised",
    "latest_crl",
    "load_snapshot",
    "make_active",
    "mark_key_compromised",
    "mark_request_issued",
    "migrate",
    "next_crl_number",
    "provisioner_version",
    "read_request_rows",
    "record_certificate",
    "record_issuer",
    "revoke_issuer",
    "revoked_issuer_entries",
    "save_latest_crl",
    "snapshot_database",
    "spend_challenge_in",
    "spend_tokens",
    "spki_sha256_of",
    "sqlite_url_for",
    "subject_alt_names",
    "transaction_values",
]
