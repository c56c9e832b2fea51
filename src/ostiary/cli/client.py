"""The holder's commands that talk to the CA: bootstrap, renew, revoke (``request`` is in
:mod:`ostiary.cli.enroll`).

``ostiary bootstrap`` saves the CA's URL and root as this user's defaults; every other
command takes ``--ca-url``/``--root`` or falls back to them. Private keys are made here and
never sent. Renewal logs timestamped lines on stderr, for cron and the journal alike.
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

from ostiary.cli.console import fail, note, out
from ostiary.cli.files import read_input, write_file
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
from ostiary.client.api import OstiaryClient, Via
from ostiary.client.bootstrap import bootstrap_client_config
from ostiary.client.config import (
    CLIENT_CONFIG_FILE,
    ROOT_FILE,
    client_config_dir,
    load_client_config,
    normalize_ca_url,
)
from ostiary.client.fingerprints import normalize_fingerprint
from ostiary.client.renewal import (
    Backoff,
    RenewalDaemon,
    RenewalPolicy,
    Waker,
    install_signal_handlers,
    parse_renewal_policy,
)
from ostiary.core.crl import parse_revocation_reason as parse_reason
from ostiary.core.encoding import load_certificate_chain, parse_serial
from ostiary.core.errors import BadRequest, Conflict, OstiaryError
from ostiary.core.lifetime import parse_duration

CAUrl = Annotated[
    str | None,
    typer.Option(
        "--ca-url", help="The CA's URL (default: saved by 'ostiary bootstrap').", show_default=False
    ),
]
RootFile = Annotated[
    Path | None,
    typer.Option(
        "--root",
        help="Trusted root certificate, PEM (default: saved by 'ostiary bootstrap').",
        show_default=False,
    ),
]
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


def register(root_app: typer.Typer, cert_app: typer.Typer) -> None:
    """Add ``bootstrap`` to ``ostiary`` and the holder's commands to ``ostiary cert``."""
    from ostiary.cli.enroll import request

    root_app.command()(bootstrap)
    cert_app.command()(request)
    cert_app.command()(renew)
    cert_app.command("renew-all")(renew_all)
    cert_app.command("needs-renewal")(needs_renewal)
    cert_app.command()(revoke)


# --------------------------------------------------------------------------- bootstrap


def bootstrap(
    ca_url: Annotated[
        str, typer.Option("--ca-url", help="The CA's URL, e.g. https://ca.lan:8443.")
    ],
    fingerprint: Annotated[
        str,
        typer.Option("--fingerprint", help="SHA-256 of the CA's root (from 'ostiary ca init')."),
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Replace defaults saved for another CA.")
    ] = False,
) -> None:
    """Trust a CA: fetch its root, keep it only if its SHA-256 matches, save it as the default.

    The root and URL go to this user's configuration folder ($OSTIARY_CLIENT_CONFIG, else
    $XDG_CONFIG_HOME/ostiary, else ~/.config/ostiary); later commands use them when --ca-url
    and --root are not given. With a wrong fingerprint nothing is saved.
    """
    folder = client_config_dir()
    url, expected = normalize_ca_url(ca_url), normalize_fingerprint(fingerprint)
    if not force:
        _refuse_other_ca(folder, url, expected)
    config = bootstrap_client_config(url, expected)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_file(folder / ROOT_FILE, config.dump_root())
    write_file(folder / CLIENT_CONFIG_FILE, config.dump_settings().encode())
    note(f"Trusting {config.root.subject.rfc4514_string()} at {config.ca_url}")
    note(f"Saved to {folder}")
    out.print(config.fingerprint)


def _refuse_other_ca(folder: Path, url: str, fingerprint: str) -> None:
    if not (folder / CLIENT_CONFIG_FILE).exists():
        return
    try:
        saved = load_client_config(folder)
    except OstiaryError:
        raise Conflict(
            f"{folder} holds a client configuration that cannot be read: use --force"
        ) from None
    if saved.ca_url != url or saved.fingerprint != fingerprint:
        raise Conflict(
            f"{folder} already trusts {saved.ca_url} (root {saved.fingerprint[:16]}...): "
            "use --force to replace it"
        )


def ca_connector(ca_url: str | None, root: Path | None) -> Callable[[], OstiaryClient]:
    """How to reach the CA: the options given, the rest from the saved defaults.

    Everything is read and checked now, so that a daemon fails at start, not at renewal.
    """
    if ca_url is None or root is None:
        saved = load_client_config()
        ca_url = ca_url or saved.ca_url
        roots = [saved.root]
    if root is not None:
        roots = load_certificate_chain(read_input(root, "root file"))
    url = normalize_ca_url(ca_url)
    return lambda: OstiaryClient(url, roots)


# --------------------------------------------------------------------------- request


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
    renewer = FileRenewer(
        files,
        ca_connector(ca_url, root),
        log=_prefixed(crt.name),
        via=_via(via_mtls),
        rekey=rekey,
        p12=p12_output,
        hook=exec_command,
    )
    if daemon:
        _run_daemon(renewer, policy, backoff, renew_now=force)
        return
    certificate = files.load_certificate()
    if not force and not policy.needs_renewal(certificate, now=datetime.now(UTC)):
        renewer.refresh_p12()
        due = timestamp(policy.certificate_due_at(certificate))
        note(f"{crt} is not due for renewal until {due} ({policy.describe()}); --force renews now")
        return
    renewer.renew()


def _run_daemon(
    renewer: FileRenewer, policy: RenewalPolicy, backoff: Backoff, *, renew_now: bool
) -> None:
    renewer.refresh_p12()
    waker = Waker()
    install_signal_handlers(waker)
    renewer.log(f"renewal daemon started (pid {os.getpid()}): renews {policy.describe()}")
    try:
        RenewalDaemon(
            current=renewer.files.load_certificate,
            renew=renewer.renew,
            policy=policy,
            log=renewer.log,
            waker=waker,
            backoff=backoff,
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
) -> None:
    """Renew every certificate in DIR that is due (name.crt with name.key beside it).

    Each step is logged with a timestamp. One failure does not stop the others; the exit
    status is 0 if every certificate is fine, 1 if any failed.
    """
    policy = parse_renewal_policy(expires_in, renew_at)
    password = read_password_file(password_file) if password_file else None
    connect = ca_connector(ca_url, root)
    now = datetime.now(UTC)
    counts = {"renewed": 0, "not due": 0, "failed": 0}
    for files in find_holder_files(folder, log=log_line):
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
            certificate = files.load_certificate()
            if policy.needs_renewal(certificate, now=now):
                renewer.renew()
                counts["renewed"] += 1
            else:
                due = timestamp(policy.certificate_due_at(certificate))
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
        chain, key = HolderFiles(cert, key_file).load()
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


__all__ = ["register"]
