"""``ostiary ca ...``: commands for the CA owner, working on the CA folder."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from ostiary.authority.authority import Authority
from ostiary.authority.folder import (
    init_ca_folder,
)
from ostiary.cli import serve as serve_command
from ostiary.cli.console import err, note, out
from ostiary.cli.files import check_writable, read_input, write_file
from ostiary.cli.hsm import init_token_ca_folder, token_init_settings
from ostiary.cli.listen import init_http_address, warn_https_url
from ostiary.cli.options import CADir, Force, PasswordFile, Sans
from ostiary.cli.secrets import obtain_password, obtain_pin
from ostiary.cli.unlock import ca_paths, open_ca_store, unlock_ca
from ostiary.config import CAConfig, Claims, describe_validation_error
from ostiary.core.ca import fingerprint_sha256
from ostiary.core.crl import parse_revocation_reason
from ostiary.core.encoding import (
    dump_certificate_chain_pem,
    format_serial,
    load_csr,
    parse_serial,
    serial_hex,
)
from ostiary.core.errors import BadRequest, Conflict, NotFound
from ostiary.core.issuance import Authorization
from ostiary.core.keys import KeyType, parse_key_type
from ostiary.core.lifetime import parse_duration
from ostiary.core.names import format_general_name, parse_san, parse_subject, sans_of, upn_name
from ostiary.core.profiles import ProfileOptions
from ostiary.store import Store, migrate

app = typer.Typer(
    help="Run the certificate authority: init, sign, revoke, CRLs.", no_args_is_help=True
)


@contextmanager
def open_authority(directory: Path | None, password_file: Path | None) -> Iterator[Authority]:
    """The CA folder's :class:`Authority`, its key unlocked and its database open."""
    with unlock_ca(directory, password_file) as ca:
        yield ca.authority


@app.command()
def init(
    name: Annotated[str | None, typer.Option(help="The CA's name, e.g. 'Home'.")] = None,
    directory: CADir = None,
    key_type: Annotated[
        str, typer.Option("--key-type", help="p256, p384, ed25519, rsa2048, rsa3072, rsa4096.")
    ] = KeyType.P256.value,
    password_file: PasswordFile = None,
    address: Annotated[
        str, typer.Option(help="HOST:PORT the CA server will listen on.")
    ] = "127.0.0.1:8443",
    http_address: Annotated[
        str | None,
        typer.Option(
            "--http-address",
            help="HOST:PORT the plain-HTTP listener (CRL, OCSP, CA certificates) will use, "
            "stored for 'ca serve' (default: the --address host and the port of an http:// "
            "--url; without one, 'ca serve' takes port 8080).",
            show_default=False,
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            help="Base URL put in certificates for the CRL, OCSP and CA certificate: "
            "http://, served by the plain-HTTP listener (default: that listener's address).",
        ),
    ] = None,
    dns: Annotated[
        list[str] | None, typer.Option("--dns", help="DNS name of the CA server (repeatable).")
    ] = None,
    kms: Annotated[
        str, typer.Option(help="Where the CA keys live: 'file' or 'pkcs11' (docs/hsm.md).")
    ] = "file",
    pkcs11_module: Annotated[
        Path | None, typer.Option("--pkcs11-module", help="PKCS#11 module (.so) for --kms pkcs11.")
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="Label of the PKCS#11 token for --kms pkcs11.")
    ] = None,
    key_label_prefix: Annotated[
        str, typer.Option(help="Token key labels: PREFIX-root, PREFIX-intermediate, PREFIX-seal.")
    ] = "ostiary",
    default_lifetime: Annotated[
        str | None,
        typer.Option(
            "--default-lifetime",
            help="Lifetime of a certificate when none is asked, e.g. 24h (default 24h).",
            show_default=False,
        ),
    ] = None,
    max_lifetime: Annotated[
        str | None,
        typer.Option(
            "--max-lifetime",
            help="Longest certificate this CA issues, e.g. 90d (default 30d); "
            "provisioners may only narrow it.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create a new CA: a root, an issuing intermediate, encrypted keys and a database."""
    paths = ca_paths(directory)
    if paths.exists():
        raise BadRequest(f"a CA already exists in {paths.root}: refusing to overwrite it")
    if name is None:
        if not typer.get_text_stream("stdin").isatty():
            raise BadRequest("give the CA a name with --name")
        name = typer.prompt("CA name")
    try:
        config = CAConfig(
            name=name,
            key_type=parse_key_type(key_type),
            address=address,
            http_address=http_address or init_http_address(address, url),
            url=url,
            dns=tuple(dns or ()),
            claims=_init_claims(default_lifetime, max_lifetime),
            **token_init_settings(kms, pkcs11_module, token, key_label_prefix),
        )
    except ValidationError as exc:
        raise BadRequest(describe_validation_error(exc)) from None
    warn_https_url(config.url)
    if config.kms == "pkcs11":  # keys made in the token, unlocked by its PIN (docs/hsm.md)
        pin = obtain_pin(password_file, token=str(token))
        with err.status("Generating keys in the token and certificates..."):
            material = init_token_ca_folder(paths, config, pin, now=datetime.now(UTC))
    else:
        password = obtain_password(password_file, purpose="the new CA keys", confirm=True)
        with err.status("Generating keys and certificates..."):
            material = init_ca_folder(paths, config, password, now=datetime.now(UTC))
    with err.status("Creating the database..."):
        migrate(material.database_url)
        store = Store.from_url(material.database_url)
        try:
            Authority(material, store).audit(
                "ca.initialized",
                actor="cli",
                target=material.root.subject.rfc4514_string(),
                details={"fingerprint_sha256": fingerprint_sha256(material.root)},
            )
        finally:
            store.dispose()
            material.signer.close()
    note(f"Created CA '{name}' in {paths.root}")
    note(f"  root:         {paths.root_certificate}")
    note(f"  intermediate: {paths.intermediate_certificate}")
    note("Root fingerprint (SHA-256), for 'ostiary bootstrap --fingerprint':")
    out.print(fingerprint_sha256(material.root))


def _init_claims(default_lifetime: str | None, max_lifetime: str | None) -> Claims:
    """The CA-wide lifetime claims from ``ca init``'s options (unset ones keep the defaults)."""
    given = {
        field: parse_duration(text)
        for field, text in (("default_lifetime", default_lifetime), ("max_lifetime", max_lifetime))
        if text is not None
    }
    return Claims(**given)


def _parse_not_after(value: str | None) -> datetime | object | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return parse_duration(value)
    if moment.tzinfo is None:
        raise BadRequest(f"--not-after {value!r}: give a time zone (e.g. 2027-01-01T00:00:00Z)")
    return moment.astimezone(UTC)


@app.command()
def sign(
    csr_file: Annotated[Path, typer.Argument(metavar="CSR", help="The request (PEM or DER).")],
    out_file: Annotated[Path, typer.Option("--out", help="Where to write the certificate.")],
    profile: Annotated[str, typer.Option(help="client, user, server, device or ocsp.")] = "client",
    san: Sans = None,
    upn: Annotated[
        str | None, typer.Option(help="UPN SAN (user@domain) for the 'user' profile.")
    ] = None,
    subject: Annotated[
        str | None, typer.Option(help="Subject: a common name or 'CN=..,O=..'.")
    ] = None,
    not_after: Annotated[
        str | None,
        typer.Option("--not-after", help="Lifetime (24h, 7d) or an RFC 3339 time."),
    ] = None,
    smart_card_logon: Annotated[
        bool, typer.Option("--smart-card-logon", help="Add the Smart Card Logon EKU (user).")
    ] = False,
    bundle: Annotated[
        bool, typer.Option(help="Append the intermediate certificate to the output.")
    ] = True,
    force: Force = False,
    directory: CADir = None,
    password_file: PasswordFile = None,
) -> None:
    """Issue a certificate for a CSR, offline.

    The CA owner's command is the authorization: with --san/--upn/--subject the certificate
    carries exactly those names (the CSR may not ask for others); without them, the names
    in the CSR are shown and signed.
    """
    check_writable(out_file, force=force)
    csr = load_csr(read_input(csr_file, "CSR"))
    names = [parse_san(v) for v in san or []]
    if upn:
        names.append(upn_name(upn))
    if not names and subject is None:
        names = sans_of(csr.extensions)
    requested = _parse_not_after(not_after)
    with open_authority(directory, password_file) as authority:
        claims = authority.ca.config.claims
        authorization = Authorization(
            subject=parse_subject(subject) if subject else csr.subject,
            names=tuple(names),
            profile=profile,
            lifetime=claims.lifetime(),
            requested=requested,  # type: ignore[arg-type]
            options=ProfileOptions(smart_card_logon=smart_card_logon),
            provisioner="offline",
        )
        certificate = authority.issue(csr, authorization, actor="cli")
        chain = [certificate, authority.issuer.certificate] if bundle else [certificate]
    write_file(out_file, dump_certificate_chain_pem(chain))
    subject_text = certificate.subject.rfc4514_string()
    note(f"Issued {format_serial(certificate.serial_number)} to {subject_text}")
    for name in sans_of(certificate.extensions):  # as issued: canonical
        note(f"  san: {format_general_name(name)}")
    note(f"  not_after: {certificate.not_valid_after_utc:%Y-%m-%d %H:%M:%SZ}")
    note(f"Wrote {out_file}")


@app.command()
def revoke(
    serial: Annotated[
        str | None,
        typer.Argument(
            help="Serial number in hex, colons optional ('ostiary ca certs list' shows them).",
            show_default=False,
        ),
    ] = None,
    subject: Annotated[
        str | None,
        typer.Option(
            "--subject",
            help="Instead of SERIAL: a glob over names, as in 'ca certs list'; exactly one "
            "valid certificate must match.",
            show_default=False,
        ),
    ] = None,
    intermediate: Annotated[
        str | None,
        typer.Option(
            "--intermediate",
            help="Instead of SERIAL: revoke this CA's intermediate with this SHA-256 "
            "fingerprint ('ca intermediate list'); the root CRL is made again at once.",
            show_default=False,
        ),
    ] = None,
    reason: Annotated[str, typer.Option(help="RFC 5280 reason, e.g. keyCompromise.")] = (
        "unspecified"
    ),
    directory: CADir = None,
    password_file: PasswordFile = None,
) -> None:
    """Revoke a certificate issued by this CA (OCSP and the next CRL show it at once)."""
    if intermediate is not None:
        if serial is not None or subject is not None:
            raise BadRequest("--intermediate revokes a CA certificate: give no SERIAL/--subject")
        from ostiary.cli.intermediate import revoke_intermediate_command

        revoke_intermediate_command(intermediate, reason, directory, password_file)
        return
    if (serial is None) == (subject is None):
        raise BadRequest("give the SERIAL to revoke, or --subject GLOB (not both)")
    flag = parse_revocation_reason(reason)
    serial_number = parse_serial(serial) if serial is not None else _only_match(directory, subject)
    with open_authority(directory, password_file) as authority:
        record = authority.revoke(serial_number, reason=flag, actor="cli")
    note(f"Revoked {serial_hex(serial_number)} ({record.subject}), reason {flag.value}")


def _only_match(directory: Path | None, pattern: str | None) -> int:
    """The serial of the one valid certificate matching ``pattern``; refuse none or several."""
    from ostiary.cli.certs import describe_record, matching_certificates

    with open_ca_store(directory) as opened:
        store = opened.store
        found = matching_certificates(
            store, pattern, state="valid", now=datetime.now(UTC), limit=None
        )
    if not found:
        raise NotFound(f"no valid certificate matches --subject {pattern!r}")
    if len(found) > 1:
        listed = "; ".join(describe_record(r) for r in found[:10])
        more = f"; and {len(found) - 10} more" if len(found) > 10 else ""
        raise Conflict(
            f"{len(found)} valid certificates match --subject {pattern!r}: {listed}{more}; "
            "give the SERIAL of the one to revoke"
        )
    return found[0].serial_number


@app.command()
def crl(
    out_file: Annotated[Path, typer.Option("--out", help="Where to write the CRL.")],
    pem: Annotated[bool, typer.Option("--pem", help="Write PEM instead of DER.")] = False,
    root: Annotated[
        bool,
        typer.Option(
            "--root",
            help="The root's CRL instead, signed with the root key; also refreshes the "
            "certs/root.crl that the server publishes at /root.crl.",
        ),
    ] = False,
    directory: CADir = None,
    password_file: PasswordFile = None,
) -> None:
    """Write a fresh CRL of the issuing CA (or of the root), with the next CRL number."""
    check_writable(out_file, force=True)
    if root:
        der = _publish_root_crl(directory, password_file)
    else:
        with open_authority(directory, password_file) as authority:
            der = authority.build_crl()
    data = der
    if pem:
        data = x509.load_der_x509_crl(der).public_bytes(serialization.Encoding.PEM)
    write_file(out_file, data)
    note(f"Wrote {out_file}")


def _publish_root_crl(directory: Path | None, password_file: Path | None) -> bytes:
    """The root CRL, made with the root key unlocked for this moment only."""
    from ostiary.authority.root_crl import publish_root_crl

    with unlock_ca(directory, password_file) as ca:
        root_signer = ca.material.load_root_signer(ca.password)
        try:
            authority = ca.authority
            return publish_root_crl(
                ca.material, authority.store, root_signer, now=authority.clock(), actor="cli"
            )
        finally:
            root_signer.close()


from ostiary.cli import provisioner as _provisioner_commands  # noqa: E402 - needs open_authority
from ostiary.cli.audit import audit_app as _audit_app  # noqa: E402
from ostiary.cli.audit import migrate_database as _migrate_database  # noqa: E402
from ostiary.cli.backup import backup as _backup  # noqa: E402
from ostiary.cli.backup import restore as _restore  # noqa: E402
from ostiary.cli.password import password_app as _password_app  # noqa: E402
from ostiary.cli.tokens import token as _token  # noqa: E402

app.add_typer(_provisioner_commands.provisioner_app, name="provisioner")
app.add_typer(_audit_app, name="audit")
app.command("token")(_token)
app.command("migrate")(_migrate_database)
app.command("backup")(_backup)
app.command("restore")(_restore)
app.add_typer(_password_app, name="password")

from ostiary.cli import requests as _request_commands  # noqa: E402 - needs open_authority

app.add_typer(_request_commands.requests_app, name="requests")
app.add_typer(_request_commands.officer_app, name="officer")


app.command()(serve_command.serve)

from ostiary.cli.gateway import crl_watch as _crl_watch  # noqa: E402

app.command("crl-watch")(_crl_watch)

from ostiary.cli.signing_keys import key_app as _signing_key_app  # noqa: E402 - remote signing

app.add_typer(_signing_key_app, name="key")

from ostiary.cli.certs import certs_app as _certs_app  # noqa: E402

app.add_typer(_certs_app, name="certs")

from ostiary.cli.ssh_ca import ssh_app as _ssh_app  # noqa: E402

app.add_typer(_ssh_app, name="ssh")

from ostiary.cli.scep import scep_app as _scep_app  # noqa: E402 - SCEP challenges

app.add_typer(_scep_app, name="scep")

from ostiary.cli.acme import acme_app as _acme_app  # noqa: E402 - EAB keys, renew-early

app.add_typer(_acme_app, name="acme")

from ostiary.cli.health import doctor as _doctor  # noqa: E402 - health (docs/operations.md)
from ostiary.cli.health import status as _status  # noqa: E402

app.command("status")(_status)
app.command("doctor")(_doctor)

from ostiary.cli.est import est_app as _est_app  # noqa: E402 - EST codes

app.add_typer(_est_app, name="est")

from ostiary.cli.phones import client_id as _client_id  # noqa: E402 - phones (docs/phones.md)
from ostiary.cli.phones import enroll_code as _enroll_code  # noqa: E402
from ostiary.cli.phones import profile_app as _profile_app  # noqa: E402

_acme_app.command("client-id")(_client_id)
app.command("enroll-code")(_enroll_code)
app.add_typer(_profile_app, name="enroll-profile")

from ostiary.cli.intermediate import intermediate_app as _intermediate_app  # noqa: E402

app.add_typer(_intermediate_app, name="intermediate")

from ostiary.cli.root import root_app as _root_app  # noqa: E402 - docs/lifecycle.md

app.add_typer(_root_app, name="root")
