"""The CA operator's view of what was issued (HTTPS, admin token).

``GET /certificates`` lists, newest first, with ``status``, ``q`` (subject or SAN text, a
serial or a fingerprint) and ``limit``/``offset`` paging; ``next_offset`` says where the next
page starts (no total: counting a large table on every page is the cost we avoid).
``GET /certificates/{serial}`` shows one, PEM included.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request

from ostiary.core.encoding import parse_serial
from ostiary.core.errors import MalformedInput, Unauthorized
from ostiary.provisioners import verify_admin_token
from ostiary.server.body import refuse_nul
from ostiary.server.context import ServerContext, server_context
from ostiary.server.credentials import bearer_token
from ostiary.server.models import CertificateDetail, CertificateList, CertificateSummary
from ostiary.store import CertificateRepository, CertificateStatus

MAX_PAGE = 1000

router = APIRouter(tags=["admin"])
Context = Annotated[ServerContext, Depends(server_context)]


def _admin(request: Request, context: Context) -> str:
    """The admin the request's Bearer token names; 401 without a valid admin token."""
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("this needs an admin token: 'Authorization: Bearer <token>'")
    authority = context.authority
    return verify_admin_token(authority.store, token, ca=context.ca, now=authority.clock())


Admin = Annotated[str, Depends(_admin)]


@router.get("/certificates", response_model=CertificateList)
def list_certificates(
    _admin: Admin,
    context: Context,
    status: Literal["valid", "revoked"] | None = None,
    q: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> CertificateList:
    """Recorded certificates, newest first."""
    refuse_nul("q", q)
    with context.authority.store.transaction(read_only=True) as session:
        records = CertificateRepository(session).search(
            q,
            status=CertificateStatus(status) if status else None,
            limit=limit + 1,
            offset=offset,
        )
        page = [CertificateSummary.of(r) for r in records[:limit]]
    return CertificateList(
        certificates=page, next_offset=offset + limit if len(records) > limit else None
    )


@router.get("/certificates/{serial}", response_model=CertificateDetail)
def get_certificate(serial: str, _admin: Admin, context: Context) -> CertificateDetail:
    """One recorded certificate of the issuing CA, with its PEM."""
    authority = context.authority
    if len(serial) > 64:
        raise MalformedInput("not a serial number: too long")
    number = parse_serial(serial)
    with authority.store.transaction(read_only=True) as session:
        record = authority.record_of(session, number)
        return CertificateDetail.of(record)
