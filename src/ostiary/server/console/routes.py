"""The console's pages and form actions (all under ``/console``, HTTPS only).

Reading pages are GET; every change is a POST form with a CSRF token that redirects (303)
back to a page (post/redirect/get). Handlers are plain ``def`` (FastAPI's thread pool), so
database work and signing never block the event loop, except the form POSTs, which read
their (capped) body asynchronously and then run the action in the thread pool.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, Depends, Request
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from ostiary.core.describe import describe_certificate, entra_certificate_user_ids
from ostiary.core.encoding import parse_serial, serial_hex
from ostiary.core.errors import BadRequest, MalformedInput, OstiaryError
from ostiary.provisioners import list_provisioners
from ostiary.provisioners.approval_decisions import approve_request, reject_request
from ostiary.provisioners.approval_queue import open_pending_requests, request_view
from ostiary.provisioners.officers import identity_warnings, reject_requests
from ostiary.provisioners.ssh_approval import KIND as SSH_KIND
from ostiary.provisioners.ssh_approval import approve_ssh_request
from ostiary.server.body import read_body, refuse_nul
from ostiary.server.console import queries
from ostiary.server.console.render import render, render_error, static_file
from ostiary.server.console.security import (
    CSRF_FIELD,
    Officer,
    check_csrf,
    finish,
)
from ostiary.server.console.sessions import current_officer
from ostiary.server.context import ServerContext, server_context
from ostiary.server.models import CertificateSummary, parse_reason
from ostiary.server.problems import error_response
from ostiary.store import CertificateRepository, CertificateStatus, SSHCertificateRepository

_FORM = "application/x-www-form-urlencoded"
_MAX_FORM = 8 * 1024
EXPIRING_DAYS = 30
PAGE = 50
REASONS = (
    "unspecified",
    "keyCompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "privilegeWithdrawn",
)


class ConsoleRoute(APIRoute):
    """Errors as HTML pages for browsers, problem documents for API clients."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except OstiaryError as exc:
                if "text/html" in request.headers.get("accept", ""):
                    return finish(render_error(request, exc), None)
                return finish(error_response(exc), None)

        return route


router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
Context = Annotated[ServerContext, Depends(server_context)]
CurrentOfficer = Annotated[Officer, Depends(current_officer)]


def _page(request: Request, officer: Officer, template: str, **values: Any) -> Response:
    values.setdefault("csrf_field", CSRF_FIELD)
    return finish(render(request, template, officer=officer, **values), officer)


async def read_form(request: Request, officer: Officer) -> dict[str, str]:
    """The POSTed form (url-encoded, capped), after the CSRF check; one value per field."""
    body = await read_body(request, media_types=(_FORM,), limit=_MAX_FORM)
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise MalformedInput("the form is not valid url-encoded UTF-8") from None
    form = {name: values[0] for name, values in fields.items() if values}
    check_csrf(officer, form.get(CSRF_FIELD))
    return form


def _see_other(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


# --------------------------------------------------------------------------- static


@router.get("/static/{name}")
def static(name: str) -> Response:
    return finish(static_file(name), None)


# --------------------------------------------------------------------------- pages


@router.get("")
def dashboard(request: Request, officer: CurrentOfficer, context: Context) -> Response:
    authority = context.authority
    now = authority.clock()
    stats = queries.dashboard_stats(authority.store, now=now, expiring_days=EXPIRING_DAYS)
    return _page(
        request,
        officer,
        "dashboard.html",
        stats=stats,
        expiring_days=EXPIRING_DAYS,
        chart=queries.issuance_chart(authority.store, now=now, days=30),
    )


@router.get("/certificates")
def certificates(
    request: Request,
    officer: CurrentOfficer,
    context: Context,
    q: str = "",
    status: str = "",
    profile: str = "",
    offset: int = 0,
) -> Response:
    if status not in ("", "valid", "revoked") or len(q) > 256 or len(profile) > 64:
        raise BadRequest("unknown filter: status is valid or revoked, q at most 256 characters")
    refuse_nul("q", q)
    refuse_nul("profile", profile)
    offset = max(0, min(offset, 2**31))
    with context.authority.store.transaction(read_only=True) as session:
        records = CertificateRepository(session).search(
            q or None,
            status=CertificateStatus(status) if status else None,
            profile=profile or None,
            limit=PAGE + 1,
            offset=offset,
        )
        rows = [CertificateSummary.of(r) for r in records[:PAGE]]
        ssh_rows = (
            SSHCertificateRepository(session).search(q or None, status=status or None, limit=PAGE)
            if not profile and not offset
            else []
        )
        for record in ssh_rows:
            session.expunge(record)
    return _page(
        request,
        officer,
        "certificates.html",
        rows=rows,
        ssh_rows=ssh_rows,
        q=q,
        status=status,
        profile=profile,
        offset=offset,
        next_offset=offset + PAGE if len(records) > PAGE else None,
        query_of=lambda **kw: _query(q=q, status=status, profile=profile, **kw),
    )


@router.get("/certificates/{serial}")
def certificate_detail(
    serial: str, request: Request, officer: CurrentOfficer, context: Context
) -> Response:
    authority = context.authority
    record = _record(context, serial)
    certificate = record.certificate()
    chain = [authority.ca.intermediate, authority.ca.root]
    return _page(
        request,
        officer,
        "certificate.html",
        record=CertificateSummary.of(record),
        info=describe_certificate(certificate),
        entra=entra_certificate_user_ids(certificate),
        chain=[c.subject.rfc4514_string() for c in chain],
        reasons=REASONS,
    )


@router.get("/certificates/{serial}/pem")
def certificate_pem(serial: str, officer: CurrentOfficer, context: Context) -> Response:
    """The certificate and its chain (intermediate), PEM, as a download."""
    record = _record(context, serial)
    certificates: list[x509.Certificate] = [record.certificate(), context.authority.ca.intermediate]
    body = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)
    response = Response(body, media_type="application/x-pem-file")
    response.headers["Content-Disposition"] = f'attachment; filename="{record.serial}.pem"'
    return finish(response, officer)


@router.post("/certificates/{serial}/revoke")
async def revoke_certificate(
    serial: str, request: Request, officer: CurrentOfficer, context: Context
) -> Response:
    form = await read_form(request, officer)
    if form.get("confirm") != "yes":
        raise BadRequest("tick the confirmation box to revoke")
    reason = parse_reason(form.get("reason", "unspecified")[:64])
    number = _serial(serial)
    await run_in_threadpool(context.authority.revoke, number, reason=reason, actor=officer.actor)
    return finish(_see_other(f"/console/certificates/{serial_hex(number)}"), officer)


@router.get("/requests")
def requests_page(request: Request, officer: CurrentOfficer, context: Context) -> Response:
    authority = context.authority
    now = authority.clock()
    pending = open_pending_requests(authority.store, now=now)
    warnings = identity_warnings(authority.store, pending, now=now)
    provisioners = sorted({r.provisioner for r in pending})
    return _page(
        request,
        officer,
        "requests.html",
        pending=pending,
        warnings=warnings,
        provisioners=provisioners,
    )


@router.post("/requests/reject-all")
async def reject_all(request: Request, officer: CurrentOfficer, context: Context) -> Response:
    """Reject every waiting request (of one provisioner), after a confirmation box."""
    form = await read_form(request, officer)
    if form.get("confirm") != "yes":
        raise BadRequest("tick the confirmation box to reject every waiting request")
    provisioner = form.get("provisioner", "")[:64] or None
    await run_in_threadpool(
        reject_requests,
        context.authority,
        officer=officer.actor,
        reason=form.get("reason", ""),
        provisioner=provisioner,
    )
    return finish(_see_other("/console/requests"), officer)


@router.post("/requests/{request_id}/approve")
async def approve(
    request_id: str, request: Request, officer: CurrentOfficer, context: Context
) -> Response:
    form = await read_form(request, officer)
    store = context.authority.store
    full_id = request_id[:64]
    view = await run_in_threadpool(request_view, store, full_id, now=context.authority.clock())
    if view.kind == SSH_KIND:
        from ostiary.server.routes.ssh import ssh_authority

        await run_in_threadpool(
            approve_ssh_request,
            ssh_authority(context),
            full_id,
            officer=officer.actor,
            code=form.get("code") or None,
        )
        return finish(_see_other("/console/certificates"), officer)
    certificate = await run_in_threadpool(
        approve_request,
        context.authority,
        request_id[:64],
        officer=officer.actor,
        code=form.get("code") or None,
    )
    return finish(
        _see_other(f"/console/certificates/{serial_hex(certificate.serial_number)}"), officer
    )


@router.post("/requests/{request_id}/reject")
async def reject(
    request_id: str, request: Request, officer: CurrentOfficer, context: Context
) -> Response:
    form = await read_form(request, officer)
    await run_in_threadpool(
        reject_request,
        context.authority,
        request_id[:64],
        officer=officer.actor,
        reason=form.get("reason", ""),
    )
    return finish(_see_other("/console/requests"), officer)


@router.get("/audit")
def audit(
    request: Request,
    officer: CurrentOfficer,
    context: Context,
    event: str = "",
    actor: str = "",
    target: str = "",
) -> Response:
    if max(len(event), len(actor), len(target)) > 128:
        raise BadRequest("audit filters are at most 128 characters")
    store = context.authority.store
    entries = queries.audit_entries(store, event=event, actor=actor, target=target, limit=200)
    return _page(
        request,
        officer,
        "audit.html",
        entries=entries,
        event=event,
        actor=actor,
        target=target,
        verification=queries.verify_audit(store),
    )


@router.get("/provisioners")
def provisioners(request: Request, officer: CurrentOfficer, context: Context) -> Response:
    items = list_provisioners(context.authority.store)
    return _page(request, officer, "provisioners.html", provisioners=items)


# --------------------------------------------------------------------------- helpers


def _serial(text: str) -> int:
    if len(text) > 64:
        raise MalformedInput("not a serial number: too long")
    return parse_serial(text)


def _record(context: ServerContext, serial: str) -> Any:
    authority = context.authority
    with authority.store.transaction(read_only=True) as session:
        record = authority.record_of(session, _serial(serial))
        session.expunge(record)
    return record


def _query(**values: Any) -> str:
    return "&".join(f"{k}={quote(str(v))}" for k, v in values.items() if v not in ("", None))


__all__ = ["EXPIRING_DAYS", "router", "timedelta"]
