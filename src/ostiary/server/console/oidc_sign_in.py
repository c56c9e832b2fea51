"""Officers without a certificate: OpenID Connect sign-in to the console.

**Which provider.** Every ``oidc`` provisioner of a confidential app (a client secret file)
with a non-empty ``admins`` list offers "Sign in with <name>" on the console's 401 page; the
people its ``admins`` list names (by ``sub``, Entra ``oid`` or a verified e-mail, exactly as
for enrollment) are officers.
Nothing else to configure: a provisioner without admins never opens the console, nor does a
public app (the CA is a web server: it redeems codes as a confidential client).

**The flow.** :mod:`.oidc_flow` (shared with ``/enroll``), with
``redirect_uri = https://<host>/console/oidc/callback`` (register that URI with the app) and
the ID token spent as ``console-oidc:<provisioner>``; then an admin is required: else 403.
Every page checks again that the provisioner still lists the officer among its admins.

**The session.** A random 256-bit id in ``__Host-ostiary-session`` (Secure, HttpOnly,
SameSite=Lax, 8 hours); the server keeps only its SHA-256 with the officer's name and the
expiry. CSRF tokens are bound to the session (instead of the certificate). Actions are
audited as ``officer-oidc:<e-mail or UPN>``. ``POST /console/oidc/sign-out`` (with the CSRF
token) ends it. Sessions and flows are kept in the database (by the SHA-256 of their ids), so
every server process and replica sees them and a restart signs no one out.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from ostiary.core.errors import PolicyDenied
from ostiary.server.console.oidc_flow import (
    begin_sign_in,
    limit_sign_ins,
    redeem_sign_in,
    take_flow,
)
from ostiary.server.console.routes import ConsoleRoute, read_form
from ostiary.server.console.security import Officer, finish
from ostiary.server.console.sessions import (
    FLOW_COOKIE,
    SESSION_COOKIE,
    SESSION_LIFETIME,
    Flow,
    Session,
    admin_provisioner,
    current_officer,
    session_store,
)
from ostiary.server.context import ServerContext, server_context
from ostiary.store import AuditLog

CALLBACK_PATH = "/console/oidc/callback"

Context = Annotated[ServerContext, Depends(server_context)]
router = APIRouter(prefix="/oidc", route_class=ConsoleRoute, include_in_schema=False)


# --------------------------------------------------------------------------- routes


@router.get("/sign-in")
def sign_in(request: Request, context: Context, provisioner: str = "") -> Response:
    """Start the sign-in: remember the flow, send the browser to the provider.

    Nothing is kept unless ``provisioner`` is one that opens the console (404); each client
    address may start only so many (429), and at most :data:`MAX_FLOWS` are in flight.
    """
    limit_sign_ins(request)
    loaded = admin_provisioner(context, provisioner)
    return finish(begin_sign_in(request, context, loaded, CALLBACK_PATH), None)


@router.get("/callback")
async def callback(
    request: Request,
    context: Context,
    state: str = "",
    code: str = "",
    error: str = "",
) -> Response:
    """The provider's redirect: check everything, then open a session (or refuse)."""
    now = context.authority.clock()
    flow = await take_flow(
        request, context, state=state, code=code, error=error, callback_path=CALLBACK_PATH
    )
    name = await run_in_threadpool(_verify_admin, context, flow, code, now)
    opened = Session(name, flow.provisioner, now + SESSION_LIFETIME)
    session_id = await run_in_threadpool(session_store(request).add_session, opened, now=now)
    response = RedirectResponse("/console", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=int(SESSION_LIFETIME.total_seconds()),
        secure=True,
        httponly=True,
        samesite="lax",
        path="/",
    )
    response.delete_cookie(FLOW_COOKIE, secure=True, httponly=True, samesite="lax", path="/")
    return finish(response, None)


@router.post("/sign-out")
async def sign_out(
    request: Request, officer: Annotated[Officer, Depends(current_officer)], context: Context
) -> Response:
    await read_form(request, officer)
    session_id = request.cookies.get(SESSION_COOKIE, "")
    ended = False
    if session_id:
        ended = await run_in_threadpool(session_store(request).end_session, session_id)
    if ended:
        _audit(context, "console.signed_out", officer.actor, {})
    response = RedirectResponse("/console", status_code=303)
    response.delete_cookie(SESSION_COOKIE, secure=True, httponly=True, samesite="lax", path="/")
    return finish(response, None)


# --------------------------------------------------------------------------- helpers


def _verify_admin(context: ServerContext, flow: Flow, code: str, now: datetime) -> str:
    """Redeem the code, verify the ID token, spend it, check the admin rule; the name."""
    signed_in = redeem_sign_in(
        context, flow, code, load=admin_provisioner, purpose="console",
        actor_kind="officer-oidc", now=now,
    )  # fmt: skip
    provisioner, identity = signed_in.provisioner, signed_in.identity
    actor = f"officer-oidc:{identity.display}"
    if identity.admin_entry is None:
        _audit(context, "console.sign_in_refused", actor, {"provisioner": provisioner.name})
        raise PolicyDenied(
            f"{identity.display} is not among the admins of provisioner {provisioner.name!r} "
            "(admins are matched by sub, Entra oid or a verified e-mail address)",
            admins_of=provisioner.name,
            signed_in_as=identity.display,
        )
    _audit(
        context,
        "console.signed_in",
        actor,
        {"provisioner": provisioner.name, "admin": identity.admin_entry},
    )
    return identity.admin_entry


def _audit(context: ServerContext, event: str, actor: str, details: dict[str, str]) -> None:
    authority = context.authority
    with authority.store.transaction() as session:
        AuditLog(session).append(
            event, at=authority.clock(), actor=actor, target=actor, details=details
        )


__all__ = ["CALLBACK_PATH", "router"]
