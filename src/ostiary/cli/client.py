"""The holder's commands that talk to the CA, registered here: ``bootstrap``
(:mod:`ostiary.cli.connect`), ``cert request`` (:mod:`ostiary.cli.request`), ``cert renew``,
``renew-all``, ``needs-renewal`` and ``revoke`` (:mod:`ostiary.cli.renewals`).
"""

from __future__ import annotations

import typer

from ostiary.cli.connect import bootstrap, ca_connector
from ostiary.cli.renewals import needs_renewal, renew, renew_all, revoke
from ostiary.cli.request import request


def register(root_app: typer.Typer, cert_app: typer.Typer) -> None:
    """Add ``bootstrap`` to ``ostiary`` and the holder's commands to ``ostiary cert``."""
    root_app.command()(bootstrap)
    cert_app.command()(request)
    cert_app.command()(renew)
    cert_app.command("renew-all")(renew_all)
    cert_app.command("needs-renewal")(needs_renewal)
    cert_app.command()(revoke)


__all__ = ["ca_connector", "register"]
