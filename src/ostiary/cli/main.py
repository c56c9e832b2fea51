"""The ``ostiary`` command: ``ostiary ca ...`` for the CA owner, ``ostiary cert ...`` for
certificate holders.

Errors Ostiary raises on purpose become one readable line on stderr and exit status 1;
usage errors exit 2 (Click's convention). Nothing else is caught: an unexpected exception is a
bug and shows its traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer._click.exceptions import ClickException  # typer vendors click
from typer.core import TyperGroup

from ostiary.cli import ca as ca_commands
from ostiary.cli import cert as cert_commands
from ostiary.cli import client as client_commands
from ostiary.cli import gateway as gateway_commands
from ostiary.cli import sign as sign_commands
from ostiary.cli.console import fail
from ostiary.core.errors import OstiaryError


class _Group(TyperGroup):
    """The root group: turns :class:`OstiaryError` into ``error: ...`` and exit 1, and a
    usage error into ``error: ...`` and exit 2, each on one line.
    """

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except ClickException as exc:
            fail(f"{exc.format_message()} (see --help)", code=exc.exit_code)
        except typer.Abort:
            fail("aborted")
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: Any) -> Any:  # typer's own (vendored) click Context
        try:
            return super().invoke(ctx)
        except OstiaryError as exc:
            fail(exc.detail)
        except KeyboardInterrupt:
            fail("interrupted", code=130)
        return None


app = typer.Typer(
    cls=_Group,
    name="ostiary",
    help="Ostiary: a certificate authority for client certificates (mTLS).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(ca_commands.app, name="ca")
app.add_typer(cert_commands.app, name="cert")
app.add_typer(sign_commands.sign_app, name="sign")
client_commands.register(app, cert_commands.app)
app.add_typer(gateway_commands.app, name="gateway")


@app.command()
def version() -> None:
    """Print Ostiary's version."""
    from importlib.metadata import version as package_version

    typer.echo(package_version("ostiary"))


def main() -> None:
    app()
