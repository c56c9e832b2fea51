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

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from ostiary.client.oidc import code_challenge_s256, new_code_verifier
from ostiary.core.errors import BadRequest, NotFound, PolicyDenied, TooManyRequests, Unauthorized
from ostiary.provisioners import _jose
from ostiary.provisioners.oidc import (
    OIDC_TYPE,
    OIDCProvisioner,
    _token_id,
    find_oidc_provisioner,
    post_token_request,
    read_client_secret,
)
from ostiary.server.console.routes import ConsoleRoute, _form
from ostiary.server.console.security import (
    Officer,
    current_officer,
    finish,
)
from ostiary.server.context import ServerContext, server_context
from ostiary.server.limits import client_address, limits_of
from ostiary.store import AuditLog, ConsoleRepository, ProvisionerRepository, Store

SESSION_COOKIE = "__Host-ostiary-session"
FLOW_COOKIE = "__Host-ostiary-oidc-flow"
SESSION_LIFETIME = timedelta(hours=8)
FLOW_LIFETIME = timedelta(minutes=10)
#: Sign-ins in flight kept at most: starting one needs no credential (and each client
#: address may start only so many, :mod:`ostiary.server.limits`).
MAX_FLOWS = 1000
CALLBACK_PATH = "/console/oidc/callback"

_HOST = re.compile(r"[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")
_ID = re.compile(r"[A-Za-z0-9_-]{43}")

Context = Annotated[ServerContext, Depends(server_context)]
router = APIRouter(prefix="/oidc", route_class=ConsoleRoute, include_in_schema=False)


@dataclass(frozen=True)
class Flow:
    provisioner: str
    state: str
    nonce: str
    verifier: str
    redirect_uri: str
    expires_at: datetime

    def data(self) -> dict[str, str]:
        return {
            "provisioner": self.provisioner,
            "state": self.state,
            "nonce": self.nonce,
            "verifier": self.verifier,
            "redirect_uri": self.redirect_uri,
        }


@dataclass(frozen=True)
class Session:
    name: str
    provisioner: str
    expires_at: datetime


class SessionStore:
    """Sign-ins in flight and signed-in sessions, in the database, by SHA-256 of the id.

    Every server process and replica on the database sees the same ones, so a callback or a
    page may land on any of them. Expired entries are purged when new ones are added.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    def add_flow(self, flow: Flow, *, now: datetime, max_flows: int = MAX_FLOWS) -> str:
        """Keep ``flow``; :class:`TooManyRequests` while ``max_flows`` are in flight."""
        return self._add(_FLOW, flow.data(), flow.expires_at, now, limit=max_flows)

    def take_flow(self, flow_id: str, *, now: datetime) -> Flow | None:
        """The flow (removed: a callback is good once), if it exists and has not expired."""
        if not _ID.fullmatch(flow_id):
            return None
        with self._store.transaction() as session:
            found = ConsoleRepository(session).take(_FLOW, _digest(flow_id), now=now)
        if found is None:
            return None
        data, expires_at = found
        return Flow(expires_at=expires_at, **{k: str(data[k]) for k in _FLOW_FIELDS})

    def add_session(self, session: Session, *, now: datetime) -> str:
        data = {"name": session.name, "provisioner": session.provisioner}
        return self._add(_SESSION, data, session.expires_at, now)

    def session(self, session_id: str, *, now: datetime) -> Session | None:
        if not _ID.fullmatch(session_id):
            return None
        with self._store.transaction(read_only=True) as session:
            found = ConsoleRepository(session).get(_SESSION, _digest(session_id), now=now)
        if found is None:
            return None
        data, expires_at = found
        return Session(str(data["name"]), str(data["provisioner"]), expires_at)

    def end_session(self, session_id: str) -> bool:
        if not _ID.fullmatch(session_id):
            return False
        with self._store.transaction() as session:
            return ConsoleRepository(session).remove(_SESSION, _digest(session_id))

    def _add(
        self,
        kind: str,
        data: dict[str, str],
        expires_at: datetime,
        now: datetime,
        *,
        limit: int | None = None,
    ) -> str:
        identifier = secrets.token_urlsafe(32)
        with self._store.transaction() as session:
            repository = ConsoleRepository(session)
            repository.purge_expired(now)
            if limit is not None:
                live, soonest = repository.live(kind, now=now)
                if live >= limit:
                    wait = (soonest - now).total_seconds() if soonest is not None else 1.0
                    raise TooManyRequests.wait(
                        f"{live} console sign-ins are in flight: try again later", wait
                    )
            repository.put(kind, _digest(identifier), data, expires_at)
        return identifier


_FLOW = "flow"
_SESSION = "session"
_FLOW_FIELDS = ("provisioner", "state", "nonce", "verifier", "redirect_uri")


def _digest(identifier: str) -> str:
    return hashlib.sha256(identifier.encode("ascii")).hexdigest()


def session_store(request: Request) -> SessionStore:
    """The console's session store, on the server's database."""
    return SessionStore(server_context(request).authority.store)


# --------------------------------------------------------------------------- who


def sign_in_providers(store: Store) -> list[str]:
    """Names of the ``oidc`` provisioners whose admins may sign in to the console."""
    with store.transaction(read_only=True) as session:
        records = ProvisionerRepository(session).list()
    return [
        r.name
        for r in records
        if r.type == OIDC_TYPE and r.config.get("admins") and r.config.get("client_secret_file")
    ]


def session_officer(request: Request) -> Officer | None:
    """The officer of a valid console session cookie, or None (see :func:`current_officer`)."""
    session_id = request.cookies.get(SESSION_COOKIE, "")
    if not session_id:
        return None
    context = server_context(request)
    sessions = session_store(request)
    session = sessions.session(session_id, now=context.authority.clock())
    if session is None:
        return None
    if not _still_admin(context, session):
        sessions.end_session(session_id)
        return None
    binding = "session:" + _digest(session_id)
    return Officer.for_session(session.name, binding, request)


# --------------------------------------------------------------------------- routes


@router.get("/sign-in")
def sign_in(request: Request, context: Context, provisioner: str = "") -> Response:
    """Start the sign-in: remember the flow, send the browser to the provider.

    Nothing is kept unless ``provisioner`` is one that opens the console (404); each client
    address may start only so many (429), and at most :data:`MAX_FLOWS` are in flight.
    """
    limits_of(request).sign_ins.check(client_address(request))
    loaded = _admin_provisioner(context, provisioner)
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
    from ostiary.provisioners.tokens import _spend

    provisioner = _admin_provisioner(context, flow.provisioner)
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
    provisioner._check_groups(claims)
    actor = f"officer-oidc:{identity.display}"
    token_id = _token_id(claims, id_token)
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


def _admin_provisioner(context: ServerContext, name: str) -> OIDCProvisioner:
    try:
        provisioner = find_oidc_provisioner(context.authority.store, name[:64])
    except (BadRequest, NotFound, PolicyDenied):
        raise NotFound("no OpenID provider for the console by that name") from None
    if not provisioner.admins or not provisioner.confidential:
        raise NotFound("no OpenID provider for the console by that name")
    return provisioner


def _still_admin(context: ServerContext, session: Session) -> bool:
    """Whether the provisioner still names this officer among its admins (checked per page)."""
    try:
        provisioner = _admin_provisioner(context, session.provisioner)
    except NotFound:
        return False
    return session.name in provisioner.admins  # the entry matched at sign-in


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


__all__ = [
    "FLOW_COOKIE",
    "SESSION_COOKIE",
    "SESSION_LIFETIME",
    "SessionStore",
    "router",
    "session_officer",
    "sign_in_providers",
]
