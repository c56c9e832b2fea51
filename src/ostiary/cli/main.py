"""The ``ostiary`` command: ``ostiary ca ...`` for the CA owner, ``ostiary cert ...`` for
certificate holders.

Errors Ostiary raises on purpose become one readable line on stderr and exit status 1;
usage errors exit 2 (Click's convention). Nothing else is caught: an unexpected exception is a
bug and shows its traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Annotated, Any, NoReturn

import typer
import typer.core
from typer._click.exceptions import ClickException  # typer vendors click
from typer.core import TyperCommand, TyperGroup

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
#: (The device side must import without the ``server`` extra: tests/packaging.)
_LAZY_GROUPS: dict[str, tuple[str, str]] = {
    "ca": ("ostiary.cli.ca", "app"),
    "gateway": ("ostiary.cli.gateway", "app"),
    "sign": ("ostiary.cli.sign", "sign_app"),
    "ssh": ("ostiary.cli.ssh", "app"),
    "tpm": ("ostiary.cli.tpm_ak", "app"),
}


#: Top-level modules of the ``server`` extra (pyproject.toml): the CA server, the gateway and
#: the CA owner's commands need them; a device does not install them.
SERVER_MODULES = frozenset(
    {
        "sqlalchemy",
        "alembic",
        "fastapi",
        "starlette",
        "uvicorn",
        "httptools",
        "uvloop",
        "psycopg",
        "jinja2",
        "pkcs11",
        "dns",
        "prometheus_client",
    }
)


def _missing_extra(exc: ModuleNotFoundError, what: str) -> NoReturn:
    """Fail in one line if ``exc`` is a module of the server extra; otherwise re-raise."""
    if (exc.name or "").partition(".")[0] not in SERVER_MODULES:
        raise exc
    fail(
        f"'ostiary {what}' needs the server extra ({exc.name} is not installed): "
        "pip install 'ostiary[server]'"
    )
    raise SystemExit(1)  # fail() has exited already


#: The groups that need the server extra.
_SERVER_GROUPS = frozenset({"ca", "gateway"})


def _missing_server_module() -> str | None:
    """The first module of the server extra that is not installed, if any (not imported)."""
    for name in sorted(SERVER_MODULES - {"starlette"}):  # starlette comes with fastapi
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            return name
    return None


def _needs_server_extra(group: str, missing: str) -> TyperCommand:
    """Stands in for ``group`` on a device: listed in ``--help``, and any use of it fails
    with the one line that says what to install.
    """
    message = (
        f"'ostiary {group}' needs the server extra ({missing} is not installed): "
        "pip install 'ostiary[server]'"
    )
    return TyperCommand(
        group,
        callback=lambda: fail(message),
        help=message,  # plain text: help is laid out by click (see above), not Rich
        short_help="(needs: pip install 'ostiary[server]')",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
    )


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
        if cmd_name in _SERVER_GROUPS and (missing := _missing_server_module()) is not None:
            return _needs_server_extra(cmd_name, missing)
        if cmd_name in _LAZY_GROUPS:
            module_name, attribute = _LAZY_GROUPS[cmd_name]
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                _missing_extra(exc, cmd_name)
            sub_app = getattr(module, attribute)
            group = typer.main.get_group(sub_app)
            group.name = cmd_name
            return group
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: Any) -> Any:  # typer's own (vendored) click Context
        try:
            return super().invoke(ctx)
        except OstiaryError as exc:
            fail(exc.detail)
        except ModuleNotFoundError as exc:  # imported when a command runs (ca serve: uvicorn)
            _missing_extra(exc, ctx.invoked_subcommand or "")
        except KeyboardInterrupt:
            fail("interrupted", code=130)
        except Exception as exc:
            refusal = _database_refusal(exc)
            if refusal is None:
                raise
            fail(refusal)
        return None


def _database_refusal(exc: BaseException) -> str | None:
    """One line for a database that cannot be used (read-only, unreachable, locked), or None
    for anything else (a bug: its traceback is shown). SQLAlchemy is only looked at if a
    command loaded it (the client's commands run without it).
    """
    errors = sys.modules.get("sqlalchemy.exc")
    if errors is None or not isinstance(exc, errors.OperationalError):
        return None
    reason = str(exc.orig).splitlines()[0] if exc.orig is not None else "no answer"
    if getattr(exc.orig, "sqlite_errorname", "").startswith("SQLITE_READONLY"):
        return (
            "the database is read-only, so nothing was changed: this user must be able to "
            f"write the database file and its folder ({reason})"
        )
    return f"the database cannot be used now, so nothing was changed: {reason}"


app = typer.Typer(
    cls=_Group,
    name="ostiary",
    help="Ostiary: a certificate authority for client certificates (mTLS).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion, --show-completion (README: completion)
)
app.add_typer(cert_commands.app, name="cert")
client_commands.register(app, cert_commands.app)


def _package_version() -> str:
    from importlib.metadata import version as package_version

    return package_version("ostiary")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"ostiary {_package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Ostiary: a certificate authority for client certificates (mTLS)."""


@app.command()
def version() -> None:
    """Print Ostiary's version."""
    typer.echo(_package_version())


def main() -> None:
    app()
