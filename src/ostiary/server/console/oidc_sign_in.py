"""Officers without a certificate: OpenID Connect sign-in to the console.

**Which provider.** Every ``oidc`` provisioner of a confidential app (a client secret file)
with a non-empty ``admins`` list offers "Sign in with <name>" on the console's 401 page; the
people its ``admins`` list names (by ``sub``, Entra ``oid`` or a verified e-mail, exactly as
for enrollment) are officers.
Nothing else to configure: a provisioner without admins never opens the console, nor does a
public app (the CA is a web server: it redeems codes as a confidential client).

**The flow.** The CA is the client (authorization code + PKCE S256 + ``state`` + ``nonce``,
OpenID Connect Core 3.1): ``GET /console/oidc/sign-in?provisioner=NAME`` keeps the flow
(state, nonce, code verifier) in the database under the SHA-256 of a random id, the id in
the ``__Host-`` flow cookie (SameSite=Lax, so that it comes back with the provider's
redirect; 10 minutes; at most 1000 in flight, and a few per client address) and
sends the browser to the provider with ``redirect_uri = https://<host>/console/oidc/callback``
(register that URI with the app). The callback takes the flow out (once), compares
``state`` in constant time, redeems the code with the verifier and the client secret,
verifies the ID token with the provisioner (signature, ``iss``, ``aud``, times, tenant),
compares its ``nonce``, applies the domain and group rules, spends the token once
(used-tokens table, ``console-oidc:<provisioner>``), and requires an admin: else 403.
Every page checks again that the provisioner still lists the officer among its admins.

**The session.** A random 256-bit id in ``__Host-ostiary-session`` (Secure, HttpOnly,
SameSite=Lax, 8 hours); the server keeps only its SHA-256 with the officer's name and the
expiry. CSRF tokens are bound to the session (instead of the certificate). Actions are
audited as ``officer-oidc:<e-mail or UPN>``. ``POST /console/oidc/sign-out`` (with the CSRF
token) ends it. Sessions and flows are kept in the database (by the SHA-256 of their ids), so
every server process and replica sees them and a restart signs no one out.
"""

from __future__ import annotations

import hmac
import re
import secrets
from datetime import datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from ostiary.client.oidc import code_challenge_s256, new_code_verifier
from ostiary.core.errors import BadRequest, PolicyDenied, Unauthorized
from ostiary.provisioners import _jose
from ostiary.provisioners.oidc import (
    id_token_spend_id,
    post_token_request,
    read_client_secret,
)
from ostiary.provisioners.tokens import _spend
from ostiary.server.console.routes import ConsoleRoute, _form
from ostiary.server.console.security import Officer, finish
from ostiary.server.console.sessions import (
    FLOW_COOKIE,
    FLOW_LIFETIME,
    SESSION_COOKIE,
    SESSION_LIFETIME,
    Flow,
    Session,
    admin_provisioner,
    current_officer,
    session_store,
)
from ostiary.server.context import ServerContext, server_context
from ostiary.server.limits import client_address, limits_of
from ostiary.store import AuditLog

CALLBACK_PATH = "/console/oidc/callback"

_HOST = re.compile(r"[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")

Context = Annotated[ServerContext, Depends(server_context)]
router = APIRouter(prefix="/oidc", route_class=ConsoleRoute, include_in_schema=False)


# --------------------------------------------------------------------------- routes


@router.get("/sign-in")
def sign_in(request: Request, context: Context, provisioner: str = "") -> Response:
    """Start the sign-in: remember the flow, send the browser to the provider.

    Nothing is kept unless ``provisioner`` is one that opens the console (404); each client
    address may start only so many (429), and at most :data:`MAX_FLOWS` are in flight.
    """
    limits_of(request).sign_ins.check(client_address(request))
    loaded = admin_provisioner(context, provisioner)
    metadata = loaded.metadata()
    now = context.authority.clock()
    verifier = new_code_verifier()
    flow = Flow(
        provisioner=loaded.name,
        state=secrets.token_urlsafe(32),
        nonce=secrets.token_urlsafe(32),
        verifier=verifier,
        redirect_uri=_redirect_uri(request),
        expires_at=now + FLOW_LIFETIME,
    )
    flow_id = session_store(request).add_flow(flow, now=now)
    query = {
        "response_type": "code",
        "client_id": loaded.client_id,
        "redirect_uri": flow.redirect_uri,
        "scope": " ".join(loaded.scopes),
        "state": flow.state,
        "nonce": flow.nonce,
        "code_challenge": code_challenge_s256(verifier),
        "code_challenge_method": "S256",
    }
    response = RedirectResponse(f"{metadata.authorization_endpoint}?{urlencode(query)}", 303)
    response.set_cookie(
        FLOW_COOKIE,
        flow_id,
        max_age=int(FLOW_LIFETIME.total_seconds()),
        secure=True,
        httponly=True,
        samesite="lax",
        path="/",
    )
    return finish(response, None)


@router.get("/callback")
async def callback(
    request: Request,
    context: Context,
    state: str = "",
    code: str = "",
    error: str = "",
) -> Response:
    """The provider's redirect: check everything, then open a session (or refuse)."""
    authority = context.authority
    now = authority.clock()
    flow_id = request.cookies.get(FLOW_COOKIE, "")
    flow = await run_in_threadpool(session_store(request).take_flow, flow_id, now=now)
    if flow is None:
        raise Unauthorized("this sign-in is unknown, expired or already finished: sign in again")
    if not state or not hmac.compare_digest(state.encode("utf-8", "replace"), flow.state.encode()):
        raise Unauthorized("the sign-in's state does not match: sign in again")
    if error:
        raise Unauthorized(f"the OpenID provider ended the sign-in: {error[:64]}")
    if not code or len(code) > 4096:
        raise BadRequest("the provider's redirect has no authorization code")
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
    await _form(request, officer)
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
    provisioner = admin_provisioner(context, flow.provisioner)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": flow.verifier,
        "redirect_uri": flow.redirect_uri,
        "client_id": provisioner.client_id,
        "client_secret": read_client_secret(provisioner),
    }
    id_token = post_token_request(
        provisioner.metadata().token_endpoint, form, ca_file=provisioner.ca_file
    )
    claims, expires_at = provisioner.verified_claims(id_token, now=now)
    nonce = claims.get("nonce")
    if not isinstance(nonce, str) or not hmac.compare_digest(
        nonce.encode("utf-8", "replace"), flow.nonce.encode()
    ):
        raise Unauthorized("the ID token's nonce is not this sign-in's")
    identity = provisioner.identity_of(claims)
    provisioner.check_groups(claims)
    actor = f"officer-oidc:{identity.display}"
    token_id = id_token_spend_id(claims, id_token)
    _spend(
        context.authority.store,
        f"console-oidc:{provisioner.name}",
        token_id,
        expires_at + _jose.LEEWAY,
        what="ID token",
        now=now,
        actor=actor,
        target=identity.display,
        details={"purpose": "console", "provisioner": provisioner.name, "token_id": token_id},
    )
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


def _redirect_uri(request: Request) -> str:
    host = request.headers.get("host", "")
    if not _HOST.fullmatch(host):
        raise BadRequest("the request's Host header is not a host name")
    return f"https://{host}{CALLBACK_PATH}"


def _audit(context: ServerContext, event: str, actor: str, details: dict[str, str]) -> None:
    authority = context.authority
    with authority.store.transaction() as session:
        AuditLog(session).append(
            event, at=authority.clock(), actor=actor, target=actor, details=details
        )


__all__ = ["CALLBACK_PATH", "router"]
