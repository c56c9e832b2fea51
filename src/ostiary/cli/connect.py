"""How the holder's commands reach the CA: ``ostiary bootstrap`` saves the CA's URL and root
as this user's defaults; every other command takes ``--ca-url``/``--root`` or falls back to
them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509

from ostiary.cli.console import note, out
from ostiary.cli.files import read_input, write_file
from ostiary.client.api import OstiaryClient
from ostiary.client.bootstrap import bootstrap_client_config
from ostiary.client.config import (
    CLIENT_CONFIG_FILE,
    ROOT_FILE,
    ROOTS_FILE,
    client_config_dir,
    load_client_config,
    normalize_ca_url,
)
from ostiary.client.fingerprints import normalize_fingerprint
from ostiary.core.ca import fingerprint_sha256
from ostiary.core.encoding import load_certificate_chain
from ostiary.core.errors import Conflict, OstiaryError

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
    if config.next_roots:
        write_file(folder / ROOTS_FILE, config.dump_next_roots())
    else:
        (folder / ROOTS_FILE).unlink(missing_ok=True)
    write_file(folder / CLIENT_CONFIG_FILE, config.dump_settings().encode())
    note(f"Trusting {config.root.subject.rfc4514_string()} at {config.ca_url}")
    for adopted in config.next_roots:
        note(f"  and its next root {fingerprint_sha256(adopted)} (through a cross-certificate)")
    for refusal in config.refused_roots:
        note(f"  {refusal}")
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
    url, roots = ca_settings(ca_url, root)
    return lambda: OstiaryClient(url, roots)


def ca_settings(ca_url: str | None, root: Path | None) -> tuple[str, list[x509.Certificate]]:
    """The CA's URL and trusted roots: the options given, the rest from the saved defaults."""
    if ca_url is None or root is None:
        saved = load_client_config()
        ca_url = ca_url or saved.ca_url
        roots = saved.trusted_roots
    if root is not None:
        roots = load_certificate_chain(read_input(root, "root file"))
    return normalize_ca_url(ca_url), roots
