"""``ostiary sign assertion``: print a client assertion signed by the CA (remote signing).

The caller's own credential says who is asking: a client certificate and its key (mTLS, the
workload identity) or an admin-issued token. The key never leaves the CA.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from ostiary.cli.files import read_input
from ostiary.cli.holder import HolderFiles
from ostiary.client.config import load_client_config, normalize_ca_url
from ostiary.client.signing import RemoteAssertion, entra_token_endpoint
from ostiary.core.encoding import load_certificate_chain
from ostiary.core.errors import BadRequest
from ostiary.tls import TLSIdentity

sign_app = typer.Typer(help="Signatures made by the CA's signing keys.", no_args_is_help=True)


@sign_app.command("assertion")
def assertion(
    key: Annotated[str, typer.Option("--key", help="The signing key's name.")],
    client_id: Annotated[str, typer.Option("--client-id", help="Application (client) id.")],
    tenant: Annotated[
        str | None,
        typer.Option("--tenant", help="Entra tenant: the audience is its v2 token endpoint."),
    ] = None,
    audience: Annotated[
        str | None, typer.Option("--audience", help="Token endpoint URL (instead of --tenant).")
    ] = None,
    cert: Annotated[
        Path | None, typer.Option("--cert", help="Your client certificate (and chain), PEM.")
    ] = None,
    cert_key: Annotated[
        Path | None, typer.Option("--cert-key", help="Its private key (PEM).")
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="An admin-issued token (instead of --cert).")
    ] = None,
    lifetime: Annotated[
        int, typer.Option("--lifetime", help="Seconds the assertion lives (at most 600).")
    ] = 300,
    alg: Annotated[
        str | None, typer.Option("--alg", help="PS256 (default for RSA), RS256 or ES256.")
    ] = None,
    ca_url: Annotated[
        str | None, typer.Option("--ca-url", help="The CA's URL (default: from bootstrap).")
    ] = None,
    root: Annotated[
        Path | None, typer.Option("--root", help="Trusted root, PEM (default: from bootstrap).")
    ] = None,
) -> None:
    """Print one client assertion (a JWT) for CLIENT_ID, signed by KEY at the CA."""
    if audience is None:
        if tenant is None:
            raise BadRequest("give --tenant or --audience")
        audience = entra_token_endpoint(tenant)
    elif tenant is not None:
        raise BadRequest("give --tenant or --audience, not both")
    identity = None
    if token is None:
        if cert is None or cert_key is None:
            raise BadRequest("give --cert and --cert-key (mTLS), or --token")
        chain, private_key = HolderFiles(cert, cert_key).load()  # the check 'cert renew' runs
        identity = TLSIdentity(tuple(chain), private_key)
    elif cert is not None or cert_key is not None:
        raise BadRequest("give --cert/--cert-key or --token, not both")
    if ca_url is None or root is None:
        saved = load_client_config()
        ca_url = ca_url or saved.ca_url
        roots = [saved.root]
    if root is not None:
        roots = load_certificate_chain(read_input(root, "root file"))
    with RemoteAssertion(
        normalize_ca_url(ca_url),
        roots,
        key=key,
        client_id=client_id,
        audience=audience,
        identity=identity,
        token=token,
        lifetime=timedelta(seconds=lifetime),
        alg=alg,
    ) as source:
        typer.echo(source())


__all__ = ["sign_app"]
