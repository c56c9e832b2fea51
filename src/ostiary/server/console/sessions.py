"""Who is at the console: an officer's certificate, or a session opened by OpenID sign-in.

:func:`current_officer` is the dependency every console page takes. A connection's client
certificate bound to the officer role names the officer (:mod:`.security`); failing that, a
valid session cookie does. Sessions and sign-ins in flight live in the database by the
SHA-256 of their ids (:class:`SessionStore`), so every process and replica sees them; the
sign-in flow itself is :mod:`.oidc_sign_in`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import Request

from ostiary.core.errors import BadRequest, NotFound, PolicyDenied, TooManyRequests, Unauthorized
from ostiary.provisioners.oidc import OIDC_TYPE, OIDCProvisioner, find_oidc_provisioner
from ostiary.server.console.security import Officer, certificate_officer
from ostiary.server.context import ServerContext, server_context
from ostiary.server.credentials import peer_certificate
from ostiary.store import ConsoleRepository, ProvisionerRepository, Store

SESSION_COOKIE = "__Host-ostiary-session"
FLOW_COOKIE = "__Host-ostiary-oidc-flow"
SESSION_LIFETIME = timedelta(hours=8)
FLOW_LIFETIME = timedelta(minutes=10)
#: Sign-ins in flight kept at most: starting one needs no credential (and each client
#: address may start only so many, :mod:`ostiary.server.limits`).
MAX_FLOWS = 1000
_ID = re.compile(r"[A-Za-z0-9_-]{43}")


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
            found = ConsoleRepository(session).take(_FLOW, digest(flow_id), now=now)
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
            found = ConsoleRepository(session).get(_SESSION, digest(session_id), now=now)
        if found is None:
            return None
        data, expires_at = found
        return Session(str(data["name"]), str(data["provisioner"]), expires_at)

    def end_session(self, session_id: str) -> bool:
        if not _ID.fullmatch(session_id):
            return False
        with self._store.transaction() as session:
            return ConsoleRepository(session).remove(_SESSION, digest(session_id))

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
            repository.put(kind, digest(identifier), data, expires_at)
        return identifier


_FLOW = "flow"
_SESSION = "session"
_FLOW_FIELDS = ("provisioner", "state", "nonce", "verifier", "redirect_uri")


def digest(identifier: str) -> str:
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
    binding = "session:" + digest(session_id)
    return Officer.for_session(session.name, binding, request)


def admin_provisioner(context: ServerContext, name: str) -> OIDCProvisioner:
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
        provisioner = admin_provisioner(context, session.provisioner)
    except NotFound:
        return False
    return session.name in provisioner.admins  # the entry matched at sign-in


def current_officer(request: Request) -> Officer:
    """FastAPI dependency: the officer the connection's certificate names, else 401/403."""
    certificate = peer_certificate(request)
    if certificate is None:
        signed_in = session_officer(request)
        if signed_in is not None:
            return signed_in
        raise Unauthorized("the console needs an officer's client certificate (mTLS)")
    try:
        return certificate_officer(request, certificate)
    except (PolicyDenied, Unauthorized):
        signed_in = session_officer(request)  # a non-officer certificate, an OIDC session
        if signed_in is not None:
            return signed_in
        raise


__all__ = [
    "FLOW_COOKIE",
    "FLOW_LIFETIME",
    "MAX_FLOWS",
    "SESSION_COOKIE",
    "SESSION_LIFETIME",
    "Flow",
    "Session",
    "SessionStore",
    "admin_provisioner",
    "current_officer",
    "digest",
    "session_officer",
    "session_store",
    "sign_in_providers",
]
