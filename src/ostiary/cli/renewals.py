"""The holder's commands on a certificate it has: renew (once, as a daemon, a whole folder),
needs-renewal, revoke. Renewal logs timestamped lines on stderr, for cron and the journal
alike.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509

from ostiary.cli.connect import CAUrl, RootFile, ca_connector
from ostiary.cli.console import fail, note
from ostiary.cli.files import read_input
from ostiary.cli.holder import (
    FileRenewer,
    HolderFiles,
    PKCS12Output,
    find_holder_files,
    log_line,
    timestamp,
)
from ostiary.cli.secrets import read_password_file
from ostiary.cli.tpm import TpmPinFile, TpmTcti
from ostiary.client.acme_renewal import enrollment_file
from ostiary.client.api import OstiaryClient, Via
from ostiary.client.renewal import (
    Backoff,
    DueRule,
    RenewalDaemon,
    RenewalPolicy,
    Waker,
    install_signal_handlers,
    parse_renewal_policy,
)
from ostiary.core.crl import parse_revocation_reason as parse_reason
from ostiary.core.encoding import load_certificate_chain, parse_serial
from ostiary.core.errors import BadRequest, OstiaryError
from ostiary.core.lifetime import parse_duration

ExpiresIn = Annotated[
    str | None,
    typer.Option(
        "--expires-in",
        help="Due when less than this is left: a duration (8h, 2d) or a share of the "
        "lifetime (33%). Default: a third of the lifetime left.",
        show_default=False,
    ),
]
RenewAt = Annotated[
    str | None,
    typer.Option(
        "--renew-at",
        help="Due once this share of the lifetime has passed (default 66%).",
        show_default=False,
    ),
]
ExecCommand = Annotated[
    str | None,
    typer.Option(
        "--exec",
        help="Shell command to run after each renewal (OSTIARY_CRT, OSTIARY_KEY, OSTIARY_SERIAL "
        "and OSTIARY_NOT_AFTER are set); its failure is logged, not fatal.",
        show_default=False,
    ),
]
Compat = Annotated[
    bool,
    typer.Option(
        "--compat", help=".p12 with 3DES + SHA-1 MAC for older iOS/macOS/Android/Windows."
    ),
]
P12PasswordFile = Annotated[
    Path | None,
    typer.Option(
        "--password-file", help="Password for the .p12 (default: none).", show_default=False
    ),
]
ViaMTLS = Annotated[
    bool,
    typer.Option(
        "--mtls/--token",
        help="Prove possession of the key with a TLS client certificate (default), or with a "
        "short token signed by it (for a CA behind a TLS-terminating proxy).",
    ),
]


# --------------------------------------------------------------------------- renew


def renew(
    crt: Annotated[Path, typer.Argument(metavar="CRT", help="Certificate (and chain), replaced.")],
    key_file: Annotated[Path, typer.Argument(metavar="KEY", help="Its private key (kept).")],
    force: Annotated[
        bool, typer.Option("--force", help="Renew even if it is not due yet.")
    ] = False,
    expires_in: ExpiresIn = None,
    renew_at: RenewAt = None,
    daemon: Annotated[
        bool,
        typer.Option(
            "--daemon", help="Keep running: renew whenever due, retry while the CA is down."
        ),
    ] = False,
    exec_command: ExecCommand = None,
    p12: Annotated[
        Path | None,
        typer.Option("--p12", help="Keep this .p12 in step with CRT.", show_default=False),
    ] = None,
    compat: Compat = False,
    password_file: P12PasswordFile = None,
    via_mtls: ViaMTLS = True,
    rekey: Annotated[
        bool, typer.Option("--rekey", help="Make a new key too (KEY is replaced).")
    ] = False,
    retry_max: Annotated[
        str, typer.Option("--retry-max", help="Longest wait between retries while the CA is down.")
    ] = "5m",
    ca_url: CAUrl = None,
    root: RootFile = None,
    pin_file: TpmPinFile = None,
    tcti: TpmTcti = None,
) -> None:
    """Renew CRT if it is due (by default once a third of its lifetime is left).

    Without --force a certificate that is not due is left alone (exit 0). With --daemon it
    keeps running: it sleeps until the certificate is due, retries with backoff while the CA
    is unreachable, renews at once on SIGHUP and stops on SIGTERM.
    """
    policy = parse_renewal_policy(expires_in, renew_at)
    backoff = Backoff(maximum=parse_duration(retry_max))
    files = HolderFiles(crt, key_file, tcti=tcti, pin_file=pin_file)
    files.load()
    p12_output = _p12_output(p12, password_file, compat)
    over_acme = enrollment_file(crt).exists()
    renewer = FileRenewer(
        files,
        _acme_only if over_acme else ca_connector(ca_url, root),
        log=_prefixed(crt.name),
        via=_via(via_mtls),
        rekey=rekey,
        p12=p12_output,
        hook=exec_command,
    )
    renewer, rule = _over_acme_if_enrolled(renewer, policy)
    if daemon:
        _run_daemon(renewer, rule, backoff, renew_now=force)
        return
    certificate = files.load_certificate()
    if not force and not rule.needs_renewal(certificate, now=datetime.now(UTC)):
        renewer.refresh_p12()
        due = timestamp(rule.certificate_due_at(certificate))
        note(f"{crt} is not due for renewal until {due} ({rule.describe()}); --force renews now")
        return
    renewer.renew()


def _acme_only() -> OstiaryClient:
    raise BadRequest("this certificate renews over ACME (CRT.acme.json), not through the CA's API")


def _over_acme_if_enrolled(
    renewer: FileRenewer, policy: RenewalPolicy
) -> tuple[FileRenewer, DueRule]:
    """A certificate ``cert request --acme`` enrolled renews over ACME (docs/acme.md)."""
    if not enrollment_file(renewer.files.certificate).exists():
        return renewer, policy
    from ostiary.cli.acme_renew import acme_renewer

    return acme_renewer(renewer, policy)


def _run_daemon(
    renewer: FileRenewer, policy: DueRule, backoff: Backoff, *, renew_now: bool
) -> None:
    renewer.refresh_p12()
    waker = Waker()
    install_signal_handlers(waker)
    renewer.log(f"renewal daemon started (pid {os.getpid()}): renews {policy.describe()}")

    def issuer_retiring(certificate: x509.Certificate) -> bool:
        with renewer.connect() as client:
            return client.issuer_retiring(certificate)

    try:
        RenewalDaemon(
            current=renewer.files.load_certificate,
            renew=renewer.renew,
            policy=policy,
            log=renewer.log,
            waker=waker,
            backoff=backoff,
            issuer_retiring=issuer_retiring,
        ).run(renew_now=renew_now)
    finally:
        waker.close()


def renew_all(
    folder: Annotated[
        Path, typer.Argument(metavar="DIR", help="Folder of name.crt + name.key pairs.")
    ],
    expires_in: ExpiresIn = None,
    renew_at: RenewAt = None,
    p12: Annotated[
        bool, typer.Option("--p12", help="Keep name.p12 beside each pair in step.")
    ] = False,
    compat: Compat = False,
    password_file: P12PasswordFile = None,
    exec_command: ExecCommand = None,
    via_mtls: ViaMTLS = True,
    ca_url: CAUrl = None,
    root: RootFile = None,
    tpm_pin_file: Annotated[
        Path | None,
        typer.Option(
            "--tpm-pin-file",
            help="tpm: file holding the PIN of the TPM keys in DIR (or $OSTIARY_TPM_PIN).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Renew every certificate in DIR that is due (name.crt with name.key beside it).

    Each step is logged with a timestamp. One failure does not stop the others; the exit
    status is 0 if every certificate is fine, 1 if any failed.
    """
    policy = parse_renewal_policy(expires_in, renew_at)
    password = read_password_file(password_file) if password_file else None
    now = datetime.now(UTC)
    counts = {"renewed": 0, "not due": 0, "failed": 0}
    found = find_holder_files(
        folder, log=log_line, pin_file=tpm_pin_file, pin_option="--tpm-pin-file"
    )
    over_acme = bool(found) and all(enrollment_file(f.certificate).exists() for f in found)
    connect = _acme_only if over_acme else ca_connector(ca_url, root)
    for files in found:
        renewer = FileRenewer(
            files,
            connect,
            log=_prefixed(files.certificate.name),
            via=_via(via_mtls),
            p12=PKCS12Output(files.certificate.with_suffix(".p12"), password, compat)
            if p12
            else None,
            hook=exec_command,
        )
        try:
            renewer, rule = _over_acme_if_enrolled(renewer, policy)
            certificate = files.load_certificate()
            if rule.needs_renewal(certificate, now=now):
                renewer.renew()
                counts["renewed"] += 1
            else:
                due = timestamp(rule.certificate_due_at(certificate))
                renewer.log(f"not due until {due}")
                renewer.refresh_p12()
                counts["not due"] += 1
        except OstiaryError as exc:
            renewer.log(f"failed: {exc.detail}")
            counts["failed"] += 1
    log_line(", ".join(f"{count} {what}" for what, count in counts.items()))
    if counts["failed"]:
        raise typer.Exit(1)


def needs_renewal(
    crt: Annotated[Path, typer.Argument(metavar="CRT", help="The certificate to look at.")],
    expires_in: ExpiresIn = None,
) -> None:
    """Exit 0 if CRT needs renewal, 1 if it does not, 2 or more on error.

    Like 'step certificate needs-renewal', for scripts: 'ostiary cert needs-renewal a.crt &&
    ostiary cert renew a.crt a.key --force'. Due means: less than --expires-in left (a
    duration, or a share of the lifetime such as 33%; default a third of the lifetime).
    Exit 2 is a usage error; 3 a certificate that cannot be read, or a bad --expires-in.
    """
    try:
        policy = parse_renewal_policy(expires_in)
        certificate = load_certificate_chain(read_input(crt, "certificate"))[0]
    except OstiaryError as exc:
        fail(exc.detail, code=3)
        return
    due = timestamp(policy.certificate_due_at(certificate))
    if policy.needs_renewal(certificate, now=datetime.now(UTC)):
        note(f"{crt} needs renewal (due since {due})")
        return
    note(f"{crt} does not need renewal until {due}")
    raise typer.Exit(1)


# --------------------------------------------------------------------------- revoke


def revoke(
    serial: Annotated[
        str | None,
        typer.Argument(help="Serial in hex (default: the serial of --cert).", show_default=False),
    ] = None,
    cert: Annotated[
        Path | None,
        typer.Option(
            "--cert", help="The certificate, to revoke as its holder.", show_default=False
        ),
    ] = None,
    key_file: Annotated[
        Path | None,
        typer.Option("--key", help="Its private key (proves you hold it).", show_default=False),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="Admin token ('ostiary ca token --admin'; '-': stdin).",
            show_default=False,
        ),
    ] = None,
    reason: Annotated[
        str, typer.Option("--reason", help="RFC 5280 reason, e.g. keyCompromise.")
    ] = "unspecified",
    holder_token: Annotated[
        bool,
        typer.Option(
            "--holder-token", help="With --cert/--key: prove possession with a token, not mTLS."
        ),
    ] = False,
    ca_url: CAUrl = None,
    root: RootFile = None,
) -> None:
    """Revoke a certificate: as its holder (--cert and --key) or with an admin --token."""
    flag = parse_reason(reason)
    if (cert is None) != (key_file is None):
        raise BadRequest("give both --cert and --key")
    if (cert is None) == (token is None):
        raise BadRequest("give --cert and --key (as the holder) or --token (an admin token)")
    connect = ca_connector(ca_url, root)
    if cert is not None and key_file is not None:
        chain, key = HolderFiles(cert, key_file, pin_option=None).load()
        serial_number = _holder_serial(serial, chain[0])
        with connect() as client:
            client.revoke(
                serial_number,
                flag,
                certificate=chain[0],
                private_key=key,
                via=_via(not holder_token),
            )
    else:
        if serial is None:
            raise BadRequest("give the SERIAL to revoke with an admin token")
        serial_number = parse_serial(serial)
        admin_token = sys.stdin.readline().strip() if token == "-" else token
        with connect() as client:
            client.revoke(serial_number, flag, admin_token=admin_token)
    note(f"Revoked serial {serial_number:x}, reason {flag.value}")


def _holder_serial(serial: str | None, certificate: x509.Certificate) -> int:
    if serial is not None and parse_serial(serial) != certificate.serial_number:
        raise BadRequest(
            f"SERIAL {serial} is not the serial of --cert ({certificate.serial_number:x})"
        )
    return certificate.serial_number


# --------------------------------------------------------------------------- helpers


def _via(mtls: bool) -> Via:
    return "mtls" if mtls else "token"


def _prefixed(name: str) -> Callable[[str], None]:
    return lambda message: log_line(f"{name}: {message}")


def _p12_output(path: Path | None, password_file: Path | None, compat: bool) -> PKCS12Output | None:
    if path is None:
        if password_file is not None or compat:
            raise BadRequest("--password-file and --compat go with --p12")
        return None
    password = read_password_file(password_file) if password_file else None
    return PKCS12Output(path, password, compat)
