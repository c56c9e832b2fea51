"""``/scep/NAME`` and ``/scep/NAME/pkiclient.exe`` on the HTTPS listener (SCEP, RFC 8894).

The plain-HTTP listener serves the same paths (:mod:`ostiary.server.public_http`): SCEP's
security lives in its messages and most clients speak plain HTTP only. The operations are
:class:`ostiary.scep.ScepResponder`'s; this only reads the query and the body.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from ostiary.core.errors import NotFound
from ostiary.scep import decode_get_message, parse_query
from ostiary.server.context import ServerContext, server_context

router = APIRouter(tags=["scep"])
Context = Annotated[ServerContext, Depends(server_context)]


async def _scep(name: str, request: Request, context: ServerContext) -> Response:
    if context.scep is None:
        raise NotFound("SCEP is not served here")
    operation, message = parse_query(request.url.query)
    body: bytes | None = None
    if operation == "PKIOperation":
        if request.method == "POST":
            body = await request.body()  # capped by the app's BodyLimit
        elif message is not None:
            body = decode_get_message(message)
    answer = await run_in_threadpool(context.scep.answer, name, operation, body)
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
