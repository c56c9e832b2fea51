"""``/scep/NAME`` and ``/scep/NAME/pkiclient.exe`` on the HTTPS listener (SCEP, RFC 8894).

The plain-HTTP listener serves the same paths (:mod:`ostiary.server.public_routes`): SCEP's
security lives in its messages and most clients speak plain HTTP only. The operations are
:class:`ostiary.scep.ScepResponder`'s; this only reads the query and the body.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ostiary.core.errors import NotFound, Unauthorized
from ostiary.core.lifetime import parse_duration
from ostiary.scep import decode_get_message, parse_query
from ostiary.server.basic_auth import basic_challenge, basic_password
from ostiary.server.body import json_request_body, read_json
from ostiary.server.context import ServerContext, server_context
from ostiary.server.limits import client_address

router = APIRouter(tags=["scep"])
Context = Annotated[ServerContext, Depends(server_context)]


async def _scep(name: str, request: Request, context: ServerContext) -> Response:
    if context.scep is None:
        raise NotFound("SCEP is not served here")
    operation, message = parse_query(request.url.query)
    body: bytes | None = None
    if operation == "PKIOperation":
        context.limits.scep_operations.check(client_address(request))
        if request.method == "POST":
            body = await request.body()  # capped by the app's BodyLimit
        elif message is not None:
            body = decode_get_message(message)
    answer = context.scep.answer_now(name, operation)  # GetCACaps, GetCACert from memory
    if answer is None:
        answer = await run_in_threadpool(
            context.scep.answer,
            name,
            operation,
            body,
            admit=context.limits.scep_operations_per_provisioner.check,
        )
    return Response(answer.body, status_code=answer.status, media_type=answer.content_type)


_PATH = "/scep/{name}"
_CGI_PATH = "/scep/{name}/pkiclient.exe"


@router.get(_PATH, summary="SCEP (RFC 8894): GetCACaps, GetCACert, PKIOperation")
async def scep_get(name: str, request: Request, context: Context) -> Response:
    return await _scep(name, request, context)


@router.post(_PATH, summary="SCEP (RFC 8894): PKIOperation")
async def scep_post(name: str, request: Request, context: Context) -> Response:
    return await _scep(name, request, context)


@router.get(_CGI_PATH, summary="SCEP (RFC 8894), the CGI path clients default to")
async def scep_cgi_get(name: str, request: Request, context: Context) -> Response:
    return await _scep(name, request, context)


@router.post(_CGI_PATH, summary="SCEP (RFC 8894), the CGI path clients default to")
async def scep_cgi_post(name: str, request: Request, context: Context) -> Response:
    return await _scep(name, request, context)


class ChallengeRequest(BaseModel):
    """``POST /scep/NAME/challenge``: the names the device's certificate is to carry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str = Field(min_length=1, max_length=1024, description="CN=... or a bare CN")
    san: list[str] = Field(default_factory=list, max_length=32, description="kind:value SANs")
    ttl: str = Field("1h", min_length=1, max_length=16, description="how long it may be used")


class ChallengeAnswer(BaseModel):
    """A one-time challenge for one device's SCEP request."""

    challenge: str
    subject: str
    san: list[str]
    expires_at: str


@router.post(
    "/scep/{name}/challenge",
    status_code=201,
    response_model=ChallengeAnswer,
    openapi_extra=json_request_body(ChallengeRequest),
    summary="A one-time SCEP challenge for an MDM (dynamic challenge, HTTP Basic)",
)
async def scep_dynamic_challenge(name: str, request: Request, context: Context) -> Response:
    """The MDM of a ``--challenge dynamic`` provisioner asks for a challenge bound to names.

    HTTPS only: the MDM's secret travels in the Basic credentials (docs/mdm.md).
    """
    from ostiary.provisioners.scep import make_mdm_challenge

    try:
        secret = basic_password(request)
        if secret is None:
            raise Unauthorized("send the MDM secret as HTTP Basic credentials")
        body = await read_json(request, ChallengeRequest)
        made = await run_in_threadpool(
            make_mdm_challenge,
            context.authority.store,
            name,
            secret,
            subject=body.subject,
            sans=tuple(body.san),
            ttl=parse_duration(body.ttl),
            now=context.authority.clock(),
        )
    except Unauthorized as exc:
        return basic_challenge(exc, "ostiary-scep-mdm")
    answer = ChallengeAnswer(
        challenge=made.value,
        subject=made.subject,
        san=list(made.sans),
        expires_at=made.expires_at.isoformat(),
    )
    return Response(answer.model_dump_json(), status_code=201, media_type="application/json")
