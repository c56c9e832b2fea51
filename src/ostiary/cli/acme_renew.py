"""``cert renew`` of a certificate ``cert request --acme`` enrolled: over ACME, with the
account of its enrollment file, following the CA's renewal window (RFC 9773; see
:mod:`ostiary.client.acme_renewal`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ostiary.cli.acme_request import chain_pem
from ostiary.cli.cert import dump_private_key
from ostiary.cli.files import write_file
from ostiary.cli.holder import FileRenewer, run_hook, timestamp
from ostiary.client.acme_order import order_certificate
from ostiary.client.acme_renewal import (
    AcmeEnrollment,
    FollowRenewalInfo,
    cert_id_of,
    enrollment_file,
)
from ostiary.client.enrollment import rekey_csr
from ostiary.client.renewal import DueRule, RenewalPolicy
from ostiary.core.errors import BadRequest
from ostiary.core.keys import KeyType, generate_private_key, key_type_of


@dataclass(frozen=True)
class AcmeFileRenewer(FileRenewer):
    """Renews CRT over ACME with the account of its enrollment file, sending ``replaces``."""

    enrollment: AcmeEnrollment | None = None

    def renew(self) -> x509.Certificate:
        if self.enrollment is None:  # pragma: no cover - made by acme_renewer only
            raise BadRequest("no ACME enrollment for this certificate")
        chain, key = self.files.load()
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise BadRequest(f"{self.files.key}: ACME renewal needs a key file (EC or RSA)")
        new_key = generate_private_key(key_type_of(key) or KeyType.P256) if self.rekey else None
        replaces = cert_id_of(chain[0])
        self.log(
            f"renewing serial {chain[0].serial_number:x} over ACME "
            f"({self.enrollment.order.directory_url}), replaces {replaces}"
        )
        ordered = order_certificate(
            self.enrollment.order,
            rekey_csr(chain[0], new_key or key),
            account=self.enrollment.account,
            replaces=replaces,
        )
        if new_key is not None:
            write_file(self.files.key, dump_private_key(new_key, None), private=True)
        write_file(self.files.certificate, chain_pem(ordered.chain))
        issued = ordered.chain[0]
        self.log(
            f"wrote {self.files.certificate}: serial {issued.serial_number:x}, "
            f"not_after {timestamp(issued.not_valid_after_utc)}"
        )
        self.refresh_p12(force=True)
        if self.hook:
            run_hook(self.hook, self.files, issued, log=self.log)
        return issued


def acme_renewer(renewer: FileRenewer, policy: RenewalPolicy) -> tuple[FileRenewer, DueRule]:
    """The ACME renewer and ARI-following rule when CRT has an enrollment file, else as given."""
    path = enrollment_file(renewer.files.certificate)
    if not path.exists():
        return renewer, policy
    enrollment = AcmeEnrollment.load(path)
    fields = {f.name: getattr(renewer, f.name) for f in dataclasses.fields(renewer)}
    acme = AcmeFileRenewer(**fields, enrollment=enrollment)
    return acme, FollowRenewalInfo(enrollment, policy, renewer.log)


__all__ = ["AcmeFileRenewer", "acme_renewer"]
