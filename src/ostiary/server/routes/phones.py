"""``/enroll``: a person gets a signed Apple profile for their phone (HTTPS only).

The person signs in with an ``oidc`` provisioner of a confidential app (the console's flow,
:mod:`ostiary.server.console.oidc_flow`, with ``redirect_uri =
https://<host>/enroll/oidc/callback``; the provisioner's identity mapping gives the names,
and an identity outside its domains or groups gets a refusal page), or types a one-time
enrollment code an officer made (``ostiary ca enroll-code``, bound to names). Either way
the page then holds a *ticket* (a random id in the ``__Host-ostiary-enroll`` cookie, never
in a URL or a log; kept by its SHA-256 for 10 minutes, good for one download) and offers
the profile. Downloading it makes the one-time SCEP challenge
or ACME ClientIdentifier inside (:mod:`ostiary.provisioners.phone_profile`), so a ticket
never downloaded leaves no usable secret behind.

Where phones enroll is :func:`~ostiary.provisioners.enrollment.default_target` for a
sign-in (an Apple-ready ``acme`` provisioner, else the one-time ``scep`` one), or the
provisioner the code names. Profiles are signed by a profile-signing certificate this
process issues itself and renews a day before it ends.
"""

from __future__ import annotations

import secrets
import threading
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, Request
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ostiary.apple.profile import MOBILECONFIG_MEDIA_TYPE
from ostiary.core.errors import BadRequest, MalformedInput, NotFound, OstiaryError, PolicyDenied
from ostiary.core.names import common_name, format_general_name
from ostiary.provisioners.enrollment import (
    Target,
    default_target,
    load_target,
    redeem_enroll_code,
)
from ostiary.provisioners.oidc import OIDC_TYPE, OIDCProvisioner, find_oidc_provisioner
from ostiary.provisioners.phone_profile import (
    PAGE_SECRET_TTL,
    ProfileSigner,
    issue_profile_signer,
    make_phone_profile,
)
from ostiary.server.body import read_body
from ostiary.server.console.oidc_flow import (
    begin_sign_in,
    limit_sign_ins,
    redeem_sign_in,
    take_flow,
)
from ostiary.server.console.render import render
from ostiary.server.console.security import finish
from ostiary.server.console.sessions import FLOW_COOKIE, digest
from ostiary.server.context import ServerContext, server_context
from ostiary.server.limits import client_address, limits_of
from ostiary.server.problems import error_response, retry_after_of, status_for, title_of
from ostiary.store import ConsoleRepository, ProvisionerRepository

CALLBACK_PATH = "/enroll/oidc/callback"
TICKET_LIFETIME = timedelta(minutes=10)
TICKET_COOKIE = "__Host-ostiary-enroll"
_TICKET = "enroll-ticket"
_FORM = "application/x-www-form-urlencoded"
_MAX_FORM = 2048
_SIGNER_MARGIN = timedelta(days=1)
_NO_TICKET = "this download link is unknown, used or expired: start again at /enroll"


class EnrollRoute(APIRoute):
    """Errors as the page's own HTML for browsers, problem documents for API clients."""

    def get_route_handler(self) -> Any:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except OstiaryError as exc:
                if "text/html" not in request.headers.get("accept", ""):
                    return finish(error_response(exc), None)
                status = int(status_for(exc))
                wait = retry_after_of(exc)  # temporary (the audit log): say so, and when
                shown = status < 500 or wait is not None
                detail = exc.detail if shown else "Something went wrong on the server."
                title = title_of(exc.code) if shown else "Server error"
                page = render(request, "enroll_error.html", status_code=status,
                              status=status, title=title, detail=detail)  # fmt: skip
                if wait is not None:
                    page.headers["Retry-After"] = str(wait)
                return finish(page, None)

        return route


Context = Annotated[ServerContext, Depends(server_context)]
router = APIRouter(prefix="/enroll", route_class=EnrollRoute, include_in_schema=False)


@router.get("")
def start(request: Request, context: Context) -> Response:
    """The page: sign in, or type a code; what Android users can do instead."""
    page = render(
        request,
        "enroll.html",
        providers=_providers(context),
        ca_name=common_name(context.authority.ca.root.subject) or "the CA",
    )
    return finish(page, None)


@router.get("/oidc/sign-in")
def sign_in(request: Request, context: Context, provisioner: str = "") -> Response:
    """Send the browser to the provider (only an ``oidc`` provisioner of a confidential app)."""
    limit_sign_ins(request)
    return finish(begin_sign_in(request, context, _enroll_provisioner(context, provisioner),
                                CALLBACK_PATH), None)  # fmt: skip


@router.get("/oidc/callback")
async def callback(
    request: Request, context: Context, state: str = "", code: str = "", error: str = ""
) -> Response:
    """The provider's redirect: the person's names become a ticket for their profile."""
    now = context.authority.clock()
    flow = await take_flow(
        request, context, state=state, code=code, error=error, callback_path=CALLBACK_PATH
    )
    signed_in = await run_in_threadpool(
        redeem_sign_in, context, flow, code, load=_enroll_provisioner, purpose="enroll",
        actor_kind="enroll-oidc", now=now,
    )  # fmt: skip
    identity = signed_in.identity
    subject = identity.subject.rfc4514_string()
    sans = [format_general_name(n) for n in identity.names]
    target = await run_in_threadpool(default_target, context.authority.store)
    response = await run_in_threadpool(_ready, request, context, target, subject, sans)
    response.delete_cookie(FLOW_COOKIE, secure=True, httponly=True, samesite="lax", path="/")
    return response


@router.post("/code")
async def enroll_code(request: Request, context: Context) -> Response:
    """A typed enrollment code: spent, and its names become a ticket."""
    limits_of(request).sign_ins.check(client_address(request))
    body = await read_body(request, media_types=(_FORM,), limit=_MAX_FORM)
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=5)
    except (UnicodeDecodeError, ValueError):
        raise MalformedInput("the form is not valid url-encoded UTF-8") from None
    typed = (fields.get("code") or [""])[0]
    store = context.authority.store
    now = context.authority.clock()
    target_name, subject, sans = await run_in_threadpool(
        redeem_enroll_code, store, typed, now=now, actor="enroll-code"
    )
    target = await run_in_threadpool(load_target, store, target_name)
    return await run_in_threadpool(_ready, request, context, target, subject, list(sans))


@router.get("/profile")
def profile(request: Request, context: Context) -> Response:
    """The signed profile for the ticket cookie (once): its one-time secret is made now."""
    authority = context.authority
    now = authority.clock()
    ticket = request.cookies.get(TICKET_COOKIE, "")[:64]
    with authority.store.transaction(read_only=True) as session:
        found = ConsoleRepository(session).get(_TICKET, digest(ticket), now=now)
    if found is None:
        raise NotFound(_NO_TICKET)
    data, _ = found
    target = load_target(authority.store, str(data["target"]))
    host_url = _https_base(request)
    made = make_phone_profile(
        authority,
        target,
        subject=str(data["subject"]),
        sans=tuple(str(s) for s in data["sans"]),
        scep_base_url=authority.ca.config.url or host_url,
        https_base_url=host_url,
        signer=_signer(context),
        now=now,
        actor=str(data["actor"]),
        ttl=PAGE_SECRET_TTL,
    )
    # The ticket is spent only once its secret is made (and audited): a refusal there (the
    # audit log cannot be written) leaves the download to be tried again. Of two downloads
    # at once one wins; the other's secret was never shown to anyone and expires unused.
    with authority.store.transaction() as session:
        if not ConsoleRepository(session).remove(_TICKET, digest(ticket)):
            raise NotFound(_NO_TICKET)
    name = quote(f"{target.name}.mobileconfig")
    response = Response(made.data, media_type=MOBILECONFIG_MEDIA_TYPE)
    response.headers["Content-Disposition"] = f"attachment; filename={name}"
    response.delete_cookie(TICKET_COOKIE, secure=True, httponly=True, samesite="strict", path="/")
    return finish(response, None)


# --------------------------------------------------------------------------- helpers


def _ready(
    request: Request, context: ServerContext, target: Target, subject: str, sans: list[str]
) -> Response:
    """Check the names against the target now, keep a ticket, show the download page."""
    authorization = target.authorization(subject, sans)  # refused here, not at download
    subject = authorization.subject.rfc4514_string()
    sans = [format_general_name(n) for n in authorization.names]
    ticket = secrets.token_urlsafe(32)
    now = context.authority.clock()
    with context.authority.store.transaction() as session:
        repository = ConsoleRepository(session)
        repository.purge_expired(now)
        repository.put(
            _TICKET,
            digest(ticket),
            {"target": target.name, "subject": subject, "sans": sans, "actor": f"enroll:{subject}"},
            now + TICKET_LIFETIME,
        )
    page = render(
        request,
        "enroll_ready.html",
        subject=subject,
        sans=sans,
        kind=target.kind,
        ticket_minutes=int(TICKET_LIFETIME.total_seconds() // 60),
        secret_minutes=int(PAGE_SECRET_TTL.total_seconds() // 60),
    )
    page.set_cookie(
        TICKET_COOKIE,
        ticket,
        max_age=int(TICKET_LIFETIME.total_seconds()),
        secure=True,
        httponly=True,
        samesite="strict",
        path="/",
    )
    return finish(page, None)


def _providers(context: ServerContext) -> list[str]:
    """``oidc`` provisioners the CA can be the client of (a confidential app)."""
    with context.authority.store.transaction(read_only=True) as session:
        records = ProvisionerRepository(session).list()
    return [r.name for r in records if r.type == OIDC_TYPE and r.config.get("client_secret_file")]


def _enroll_provisioner(context: ServerContext, name: str) -> OIDCProvisioner:
    try:
        provisioner = find_oidc_provisioner(context.authority.store, name[:64])
    except (BadRequest, NotFound, PolicyDenied):
        raise NotFound("no OpenID provider for enrollment by that name") from None
    if not provisioner.confidential:
        raise NotFound("no OpenID provider for enrollment by that name")
    return provisioner


def _https_base(request: Request) -> str:
    from ostiary.server.console.oidc_flow import redirect_uri

    return redirect_uri(request, "")


_signers: dict[int, ProfileSigner] = {}
_signers_lock = threading.Lock()


def _signer(context: ServerContext) -> ProfileSigner:
    """The profile signer of this process for the authority, issued on first use, renewed a
    day before it ends.
    """
    authority = context.authority
    with _signers_lock:
        signer = _signers.get(id(authority))
        now = authority.clock()
        if signer is None or signer.certificate.not_valid_after_utc - _SIGNER_MARGIN <= now:
            signer = issue_profile_signer(authority, actor="enroll")
            _signers[id(authority)] = signer
        return signer


__all__ = ["CALLBACK_PATH", "TICKET_COOKIE", "router"]
