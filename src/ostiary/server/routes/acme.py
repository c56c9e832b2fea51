"""ACME (RFC 8555) on the HTTPS listener: ``/acme/{provisioner}/...``.

One directory per ``acme`` provisioner (``GET /acme/NAME/directory``); every other resource
is a signed POST (section 6.2), answered with a fresh ``Replay-Nonce`` and a
``Link: rel="index"`` to the directory, errors included (RFC 8555 problem documents, built
by :func:`~ostiary.server.problems.acme_problem_response`). The protocol lives in
:mod:`ostiary.acme`; this module reads the request, runs the operation in a worker thread
(the store is synchronous) and starts challenge validations as background tasks, which a
challenge POST awaits for at most ``--acme-challenge-wait`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from ostiary.acme import accounts, authorizations, eab, nonces, orders, revocation
from ostiary.acme import finalize as finalizing
from ostiary.acme.accounts import Authenticated
from ostiary.acme.errors import AcmeProblem
from ostiary.acme.jws import JOSE_JSON
from ostiary.acme.renewal_info import renewal_info as renewal_information
from ostiary.acme.resources import Answer, Urls
from ostiary.core.errors import OstiaryError
from ostiary.provisioners.acme import AcmeProvisioner, load_acme_provisioner
from ostiary.server.blocking import BlockingCalls
from ostiary.server.body import read_body
from ostiary.server.context import ServerContext, server_context
from ostiary.server.limits import client_address, limits_of
from ostiary.server.problems import UnsupportedMediaType, acme_problem_response

router = APIRouter(prefix="/acme/{provisioner}", tags=["acme"])
logger = logging.getLogger("ostiary.acme")

#: The largest ACME request body (a CSR or a certificate, base64url, in a JWS).
MAX_ACME_BODY = 64 * 1024
PEM_CHAIN = "application/pem-certificate-chain"

#: The threads every request's operation runs in (the store is synchronous).
_blocking = BlockingCalls(name="ostiary-acme")

#: Validations running in this process (kept referenced until they finish).
_running: set[asyncio.Task[dict[str, Any]]] = set()

Operation = Callable[[ServerContext, AcmeProvisioner, Urls, Authenticated], Answer]


async def _provisioner(context: ServerContext, name: str) -> AcmeProvisioner:
    """The ``acme`` provisioner ``name``, from the process's cache when the server has one
    (a worker thread only when the store must be read).
    """
    cache = context.acme_provisioners
    if cache is None:
        return await asyncio.to_thread(load_acme_provisioner, context.authority.store, name)
    known = cache.fresh(name)
    if known is not None:
        return known
    return await asyncio.to_thread(cache.load, name, what="the URL")


def _urls(request: Request, provisioner: str) -> Urls:
    """The provisioner's URLs, on the base the request came to.

    The base is ``request.url`` up to its path: Starlette's ``base_url`` builds the same
    string (same scheme and authority, path ``/``; the ACME routes are served without a
    ``root_path``) from a copy of the scope, at a cost per request.
    """
    url = str(request.url)
    authority = url.find("://")
    if authority < 0 or request.scope.get("root_path"):
        return Urls.of(str(request.base_url), provisioner)
    path = url.find("/", authority + 3)
    return Urls.of((url if path < 0 else url[:path]) + "/", provisioner)


async def _fresh_nonce(context: ServerContext) -> str:
    store = context.authority.store
    return await asyncio.to_thread(nonces.new_nonce, store, now=context.authority.clock())


#: What a URL may hold as it is; everything else is percent-encoded before it goes into a header.
_URL_SAFE = ":/?#[]@!$&'()*+,;=%"


async def _headers(context: ServerContext, urls: Urls, nonce: str | None = None) -> dict[str, str]:
    """The headers of every answer; ``nonce`` if one was recorded already, else a new one."""
    # The directory URL carries the provisioner name from the request path, which need not
    # name a provisioner (then the answer is an error): a header holds ASCII only.
    directory_url = quote(urls.directory, safe=_URL_SAFE)
    return {
        "Replay-Nonce": nonce or await _fresh_nonce(context),
        "Link": f'<{directory_url}>;rel="index"',
        "Cache-Control": "no-store",
    }


def _response(answer: Answer, headers: dict[str, str]) -> Response:
    merged = {**headers, **answer.headers}
    if "Link" in answer.headers:
        merged["Link"] = f"{headers['Link']}, {answer.headers['Link']}"
    if isinstance(answer.body, str):
        return Response(
            answer.body, status_code=answer.status, headers=merged, media_type=PEM_CHAIN
        )
    if answer.body is None:
        return Response(status_code=answer.status, headers=merged)
    return JSONResponse(answer.body, status_code=answer.status, headers=merged)


async def _signed(
    request: Request,
    provisioner_name: str,
    *,
    key_by: str,
    operation: Operation,
    then: Callable[[Answer], Awaitable[Answer]] | None = None,
    nonce_in_write: bool = False,
) -> Response:
    """Authenticate the POST, run ``operation`` in a thread, answer (what ``then`` makes of
    the operation's answer, if given); errors as problems.

    With ``nonce_in_write`` the operation spends the request's nonce in its own write
    (:meth:`~ostiary.acme.nonces.NonceSpend.write`, before which it writes nothing);
    whatever it did not spend is spent once it returns or fails, and a nonce refused then
    is the answer.
    """
    context = server_context(request)
    urls = _urls(request, provisioner_name)
    minted: list[str] = []  # the answer's nonce, once authenticate recorded it
    try:
        provisioner = await _provisioner(context, provisioner_name)
        try:
            body = await read_body(request, media_types=(JOSE_JSON,), limit=MAX_ACME_BODY)
        except UnsupportedMediaType as exc:
            raise AcmeProblem(
                "malformed", exc.detail, status=HTTPStatus.UNSUPPORTED_MEDIA_TYPE
            ) from None
        url = str(request.url)

        def run() -> Answer:
            auth = accounts.authenticate(
                context.authority.store,
                urls,
                provisioner.name,
                content_type=request.headers.get("content-type"),
                body=body,
                url=url,
                key_by=key_by,
                now=context.authority.clock(),
                defer=nonce_in_write,
            )
            try:
                answer = operation(context, provisioner, urls, auth)
            finally:
                auth.nonce.settle()  # if not yet spent; refused: its error is the answer
                minted.append(auth.next_nonce)
            return answer

        answer = await _blocking.run(run)
        if then is not None:
            answer = await then(answer)
    except OstiaryError as exc:
        nonce = minted[0] if minted else None
        return acme_problem_response(exc, headers=await _headers(context, urls, nonce))
    return _response(answer, await _headers(context, urls, minted[0]))


# --------------------------------------------------------------------------- directory, nonce


@router.get("/directory", summary="The ACME directory (RFC 8555 section 7.1.1)")
async def directory(provisioner: str, request: Request) -> Response:
    context = server_context(request)
    urls = _urls(request, provisioner)
    try:
        acme = await _provisioner(context, provisioner)
    except OstiaryError as exc:
        return acme_problem_response(exc)
    meta: dict[str, Any] = {
        "profiles": {p: _PROFILE_TEXT.get(p, p) for p in acme.profiles},
        "externalAccountRequired": acme.require_eab,
    }
    return JSONResponse(
        {
            "newNonce": urls.resource("new-nonce"),
            "newAccount": urls.resource("new-account"),
            "newOrder": urls.resource("new-order"),
            "revokeCert": urls.resource("revoke-cert"),
            "keyChange": urls.resource("key-change"),
            "renewalInfo": urls.resource("renewal-info"),
            "meta": meta,
        }
    )


_PROFILE_TEXT = {
    "client": "TLS client certificate: EKU clientAuth only",
    "server": "TLS server certificate: EKU serverAuth only, DNS names and IP addresses",
    "device": "Device certificate: EKU clientAuth, a permanent identifier",
}


@router.get("/renewal-info/{cert_id}", summary="ACME Renewal Information (RFC 9773)")
async def renewal_info(provisioner: str, cert_id: str, request: Request) -> Response:
    context = server_context(request)
    urls = _urls(request, provisioner)
    try:
        acme = await _provisioner(context, provisioner)
        answer = await asyncio.to_thread(
            renewal_information,
            context.authority.store,
            acme.name,
            cert_id,
            now=context.authority.clock(),
        )
    except OstiaryError as exc:
        return acme_problem_response(exc)
    link = {"Link": f'<{quote(urls.directory, safe=_URL_SAFE)}>;rel="index"'}
    return _response(answer, link)


@router.head("/new-nonce", summary="A fresh nonce in Replay-Nonce (7.2)")
async def new_nonce_head(provisioner: str, request: Request) -> Response:
    return await _nonce_answer(provisioner, request, status=200)


@router.get("/new-nonce", summary="A fresh nonce in Replay-Nonce (7.2)")
async def new_nonce(provisioner: str, request: Request) -> Response:
    return await _nonce_answer(provisioner, request, status=204)


async def _nonce_answer(provisioner: str, request: Request, *, status: int) -> Response:
    context = server_context(request)
    urls = _urls(request, provisioner)
    try:
        context.limits.acme_nonces.check(client_address(request))
        await _provisioner(context, provisioner)
    except OstiaryError as exc:
        return acme_problem_response(exc)
    return Response(status_code=status, headers=await _headers(context, urls))


# --------------------------------------------------------------------------- accounts


@router.post("/new-account", summary="newAccount (7.3)")
async def new_account(provisioner: str, request: Request) -> Response:
    limits = limits_of(request)
    address = client_address(request)

    def admit(name: str) -> None:
        limits.acme_accounts.check(address)
        limits.acme_accounts_per_provisioner.check(name)  # a provisioner that exists

    url = str(request.url)

    def operation(c: ServerContext, p: AcmeProvisioner, u: Urls, a: Authenticated) -> Answer:
        def external_account(binding: Any) -> str | None:
            return eab.verified_binding(c.authority.store, c.sealer, p, binding, a.key, url=url)

        return accounts.new_account(
            c.authority.store,
            u,
            p.name,
            a,
            now=c.authority.clock(),
            admit=lambda: admit(p.name),
            external_account=external_account,
        )

    return await _signed(request, provisioner, key_by="jwk", operation=operation)


@router.post("/account/{account_id}", summary="Read, update or deactivate an account (7.3.2)")
async def account(provisioner: str, account_id: str, request: Request) -> Response:
    def operation(c: ServerContext, p: AcmeProvisioner, u: Urls, a: Authenticated) -> Answer:
        return accounts.update_account(c.authority.store, u, account_id, a, now=c.authority.clock())

    return await _signed(request, provisioner, key_by="kid", operation=operation)


@router.post("/key-change", summary="Roll over an account key (7.3.5)")
async def key_change(provisioner: str, request: Request) -> Response:
    url = str(request.url)

    def operation(c: ServerContext, p: AcmeProvisioner, u: Urls, a: Authenticated) -> Answer:
        return accounts.change_key(c.authority.store, u, a, url=url, now=c.authority.clock())

    return await _signed(request, provisioner, key_by="kid", operation=operation)


# --------------------------------------------------------------------------- orders


@router.post("/new-order", summary="newOrder (7.4)")
async def new_order(provisioner: str, request: Request) -> Response:
    def operation(c: ServerContext, p: AcmeProvisioner, u: Urls, a: Authenticated) -> Answer:
        c.limits.acme_orders_per_provisioner.check(p.name)
        return orders.new_order(c.authority, u, p, a, now=c.authority.clock())

    return await _signed(
        request, provisioner, key_by="kid", operation=operation, nonce_in_write=True
    )


@router.post("/order/{order_id}", summary="Read an order (7.1.3)")
async def order(provisioner: str, order_id: str, request: Request) -> Response:
    def operation(c: ServerContext, p: AcmeProvisioner, u: Urls, a: Authenticated) -> Answer:
        return orders.read_order(c.authority, u, p.name, order_id, a, now=c.authority.clock())

    return await _signed(
        request, provisioner, key_by="kid", operation=operation, nonce_in_write=True
    )


@router.post("/order/{order_id}/finalize", summary="Finalize an order with a CSR (7.4)")
async def finalize(provisioner: str, order_id: str, request: Request) -> Response:
    def operation(c: ServerContext, p: AcmeProvisioner, u: Urls, a: Authenticated) -> Answer:
        return finalizing.finalize(c.authority, u, p, order_id, a, now=c.authority.clock())

    return await _signed(
        request, provisioner, key_by="kid", operation=operation, nonce_in_write=True
    )


@router.post("/orders/{account_id}", summary="An account's orders, paginated (7.1.2.1)")
async def orders_list(
    provisioner: str, account_id: str, request: Request, cursor: str | None = None
) -> Response:
    def operation(c: ServerContext, p: AcmeProvisioner, u: Urls, a: Authenticated) -> Answer:
        return orders.list_orders(c.authority, u, account_id, a, cursor=cursor)

    return await _signed(request, provisioner, key_by="kid", operation=operation)


@router.post("/cert/{order_id}", summary="Download the certificate chain (7.4.2)")
async def certificate(provisioner: str, order_id: str, request: Request) -> Response:
    def operation(c: ServerContext, p: AcmeProvisioner, u: Urls, a: Authenticated) -> Answer:
        return finalizing.certificate_chain(c.authority, p.name, order_id, a, c.chain_of)

    return await _signed(
        request, provisioner, key_by="kid", operation=operation, nonce_in_write=True
    )


@router.post("/revoke-cert", summary="Revoke a certificate (7.6)")
async def revoke_cert(provisioner: str, request: Request) -> Response:
    def operation(c: ServerContext, p: AcmeProvisioner, u: Urls, a: Authenticated) -> Answer:
        return revocation.revoke_certificate(c.authority, p.name, a, now=c.authority.clock())

    return await _signed(request, provisioner, key_by="either", operation=operation)


# --------------------------------------------------------------------------- authorizations


@router.post("/authz/{authz_id}", summary="Read or deactivate an authorization (7.5)")
async def authorization(provisioner: str, authz_id: str, request: Request) -> Response:
    def operation(c: ServerContext, p: AcmeProvisioner, u: Urls, a: Authenticated) -> Answer:
        return authorizations.read_authorization(
            c.authority.store, u, authz_id, a, now=c.authority.clock()
        )

    return await _signed(
        request, provisioner, key_by="kid", operation=operation, nonce_in_write=True
    )


@router.post("/chall/{challenge_id}", summary="Read a challenge or start its validation (7.5.1)")
async def challenge(provisioner: str, challenge_id: str, request: Request) -> Response:
    validations: list[asyncio.Task[dict[str, Any]]] = []

    def operation(c: ServerContext, p: AcmeProvisioner, u: Urls, a: Authenticated) -> Answer:
        answer, started = authorizations.start_challenge(
            c.authority.store, u, p, challenge_id, a, now=c.authority.clock()
        )
        if started is not None:
            # Scheduled from the thread: the validation starts even if this request is
            # cancelled before the thread's answer reaches it.
            loop.call_soon_threadsafe(_validate, c, challenge_id, started, validations)
        return answer

    async def wait_briefly(answer: Answer) -> Answer:
        # _validate was queued before the thread's answer, so it has run by now.
        wait = server_context(request).acme_validation.answer_wait
        if not validations or wait <= 0:
            return answer
        task = validations[0]
        await asyncio.wait({task}, timeout=wait)  # the task goes on after the timeout
        if not task.done() or task.cancelled() or task.exception() is not None:
            return answer  # processing, Retry-After: polls will show the outcome
        return authorizations.settled(answer, task.result())

    loop = asyncio.get_running_loop()
    return await _signed(
        request,
        provisioner,
        key_by="kid",
        operation=operation,
        then=wait_briefly,
        nonce_in_write=True,
    )


def _validate(
    context: ServerContext,
    challenge_id: str,
    started: Any,
    tasks: list[asyncio.Task[dict[str, Any]]],
) -> None:
    task = asyncio.get_running_loop().create_task(
        authorizations.run_validation(
            context.authority.store,
            challenge_id,
            started,
            context.acme_validation,
            clock=context.authority.clock,
        )
    )
    _running.add(task)
    task.add_done_callback(_running.discard)
    task.add_done_callback(_log_failure)
    tasks.append(task)


def _log_failure(task: asyncio.Task[dict[str, Any]]) -> None:
    if not task.cancelled() and (failure := task.exception()) is not None:
        logger.error("a validation's outcome could not be recorded", exc_info=failure)


__all__ = ["router"]
