"""The ``ostiary`` command: ``ostiary ca ...`` for the CA owner, ``ostiary cert ...`` for
certificate holders.

Errors Ostiary raises on purpose become one readable line on stderr and exit status 1;
usage errors exit 2 (Click's convention). Nothing else is caught: an unexpected exception is a
bug and shows its traceback.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer
import typer.core
from typer._click.exceptions import ClickException  # typer vendors click
from typer.core import TyperGroup

from ostiary.cli import cert as cert_commands
from ostiary.cli import client as client_commands
from ostiary.cli.console import fail
from ostiary.core.errors import OstiaryError

# Help in click's plain layout rather than Rich's panels: Rich fits its option table to the
# width (80 columns in a pipe) by cutting option names ("--configuration-en..."); the plain
# layout wraps the prose and never cuts a name someone must type. Typer reads this flag when
# it formats help (the same as TYPER_USE_RICH=0, which must be set before typer is imported).
typer.core.HAS_RICH = False

#: Command groups imported only when named: the CA, the gateway and remote signing bring the
#: store, SQLAlchemy and the web stack, which ``ostiary cert ...`` on a device does not need.
_LAZY_GROUPS: dict[str, tuple[str, str]] = {
    "ca": ("ostiary.cli.ca", "app"),
    "gateway": ("ostiary.cli.gateway", "app"),
    "sign": ("ostiary.cli.sign", "sign_app"),
}


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

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY_GROUPS})

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in _LAZY_GROUPS:
            module_name, attribute = _LAZY_GROUPS[cmd_name]
            sub_app = getattr(importlib.import_module(module_name), attribute)
            group = typer.main.get_group(sub_app)
            group.name = cmd_name
            return group
        return super().get_command(ctx, cmd_name)

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
app.add_typer(cert_commands.app, name="cert")
client_commands.register(app, cert_commands.app)


@app.command()
def version() -> None:
    """Print Ostiary's version."""
    from importlib.metadata import version as package_version

    typer.echo(package_version("ostiary"))


def main() -> None:
    app()
