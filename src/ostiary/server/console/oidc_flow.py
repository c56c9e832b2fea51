"""The CA as an OpenID Connect client: one sign-in flow for the console and ``/enroll``.

The CA is the client (authorization code + PKCE S256 + ``state`` + ``nonce``, OpenID
Connect Core 3.1). :func:`begin_sign_in` keeps the flow (state, nonce, code verifier) in the
database under the SHA-256 of a random id, the id in the ``__Host-`` flow cookie
(SameSite=Lax, so that it comes back with the provider's redirect; 10 minutes; at most
1000 in flight, and a few per client address), and sends the browser to the provider with
``redirect_uri = https://<host><callback path>``. :func:`take_flow` takes the flow out on
the callback (once) and compares ``state`` in constant time; :func:`redeem_sign_in` redeems
the code with the verifier and the client secret, verifies the ID token with the
provisioner (signature, ``iss``, ``aud``, times, tenant), compares its ``nonce``, applies
the domain and group rules and spends the token once (used-tokens table,
``<purpose>-oidc:<provisioner>``). What the signed-in person may then do is the caller's:
the console requires an admin, ``/enroll`` makes a phone profile for the person's names.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from ostiary.client.oidc import code_challenge_s256, new_code_verifier
from ostiary.core.errors import BadRequest, Unauthorized
from ostiary.provisioners.oidc import OIDCProvisioner
from ostiary.provisioners.oidc_code_exchange import post_token_request, read_client_secret
from ostiary.provisioners.oidc_id_token import (
    id_token_kept_until,
    id_token_spend_id,
    verify_id_token,
)
from ostiary.provisioners.oidc_identity import OIDCIdentity, check_groups, identity_of
from ostiary.provisioners.single_use import spend_token
from ostiary.server.console.sessions import FLOW_COOKIE, FLOW_LIFETIME, Flow, session_store
from ostiary.server.context import ServerContext
from ostiary.server.limits import client_address, limits_of

_HOST = re.compile(r"[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")


@dataclass(frozen=True)
class SignedIn:
    """Who signed in, through which provisioner."""

    provisioner: OIDCProvisioner
    identity: OIDCIdentity


def limit_sign_ins(request: Request) -> None:
    """Each client address may start only so many sign-ins (429), whether or not the
    provisioner it names exists: checked first, so a miss is counted too.
    """
    limits_of(request).sign_ins.check(client_address(request))


def begin_sign_in(
    request: Request, context: ServerContext, provisioner: OIDCProvisioner, callback_path: str
) -> Response:
    """Remember the flow, send the browser to the provider (303).

    At most :data:`~ostiary.server.console.sessions.MAX_FLOWS` are in flight; the routes
    check the per-address limit (:func:`limit_sign_ins`) before they look the provisioner up,
    and the provisioner's own budget (all addresses together) is taken here, once it was
    found, before its provider is asked for anything.
    """
    context.limits.sign_ins_per_provisioner.check(provisioner.name)
    metadata = provisioner.metadata()
    now = context.authority.clock()
    verifier = new_code_verifier()
    flow = Flow(
        provisioner=provisioner.name,
        state=secrets.token_urlsafe(32),
        nonce=secrets.token_urlsafe(32),
        verifier=verifier,
        redirect_uri=redirect_uri(request, callback_path),
        expires_at=now + FLOW_LIFETIME,
    )
    flow_id = session_store(request).add_flow(flow, now=now)
    query = {
        "response_type": "code",
        "client_id": provisioner.client_id,
        "redirect_uri": flow.redirect_uri,
        "scope": " ".join(provisioner.scopes),
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
    return response


async def take_flow(
    request: Request, context: ServerContext, *, state: str, code: str, error: str,
    callback_path: str,
) -> Flow:  # fmt: skip
    """The callback's flow (taken: good once), its ``state`` checked; else 401/400."""
    now = context.authority.clock()
    flow_id = request.cookies.get(FLOW_COOKIE, "")
    flow = await run_in_threadpool(session_store(request).take_flow, flow_id, now=now)
    if flow is None or not flow.redirect_uri.endswith(callback_path):
        raise Unauthorized("this sign-in is unknown, expired or already finished: sign in again")
    if not state or not hmac.compare_digest(state.encode("utf-8", "replace"), flow.state.encode()):
        raise Unauthorized("the sign-in's state does not match: sign in again")
    if error:
        raise Unauthorized(f"the OpenID provider ended the sign-in: {error[:64]}")
    if not code or len(code) > 4096:
        raise BadRequest("the provider's redirect has no authorization code")
    return flow


def redeem_sign_in(
    context: ServerContext,
    flow: Flow,
    code: str,
    *,
    load: Callable[[ServerContext, str], OIDCProvisioner],
    purpose: str,
    actor_kind: str,
    now: datetime,
) -> SignedIn:
    """Redeem the code, verify the ID token, apply the domain and group rules, spend it."""
    provisioner = load(context, flow.provisioner)
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
    claims, expires_at = verify_id_token(provisioner, id_token, now=now)
    nonce = claims.get("nonce")
    if not isinstance(nonce, str) or not hmac.compare_digest(
        nonce.encode("utf-8", "replace"), flow.nonce.encode()
    ):
        raise Unauthorized("the ID token's nonce is not this sign-in's")
    identity = identity_of(provisioner, claims)
    check_groups(provisioner, claims)
    token_id = id_token_spend_id(claims, id_token)
    spend_token(
        context.authority.store,
        f"{purpose}-oidc:{provisioner.name}",
        token_id,
        id_token_kept_until(expires_at),
        what="ID token",
        now=now,
        actor=f"{actor_kind}:{identity.display}",
        target=identity.display,
        details={"purpose": purpose, "provisioner": provisioner.name, "token_id": token_id},
    )
    return SignedIn(provisioner, identity)


def redirect_uri(request: Request, path: str) -> str:
    host = request.headers.get("host", "")
    if not _HOST.fullmatch(host):
        raise BadRequest("the request's Host header is not a host name")
    return f"https://{host}{path}"


__all__ = ["SignedIn", "begin_sign_in", "redeem_sign_in", "redirect_uri", "take_flow"]
