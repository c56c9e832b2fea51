"""SSH certificates over HTTPS (docs/ssh.md).

- ``POST /ssh/certificate``: ``{"public_key", "token", "type"?, "lifetime"?}`` -> the
  certificate line. The token (``ostiary ca token --ssh``) names the principals. Or
  ``{"public_key", "provisioner", "id_token", "principals"?}``: an OIDC sign-in whose nonce
  commits to the key; the principals come from the identity (a subset may be asked for).
- ``POST /ssh/exchange`` (mTLS): the holder of a current X.509 certificate of this CA gets an
  SSH user certificate with the principals its names map to.
- ``POST /ssh/requests`` ``{"public_key", "provisioner", "principals", "note"?}`` -> 202 and
  the request id: an officer approves it in the approval queue; ``GET /ssh/requests/{id}``
  -> its status, and the certificate once issued.
- ``POST /ssh/renew/nonce``, ``POST /ssh/renew``: a host renews its host certificate by
  signing the challenge with its host key.
- ``GET /ssh/ca``: the user and host CA public keys, as sshd and known_hosts take them.
- ``GET /ssh/krl``: the KRL (also on the plain-HTTP listener, ``server/public_routes.py``).
- ``GET /ssh/status/{type}/{serial}``: whether a certificate is valid now, and its
  principals; what ``ostiary ssh principals-command`` asks on every login.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ostiary.authority.ssh import SSHAuthority
from ostiary.authority.ssh_keys import ca_key_sha256
from ostiary.core.errors import (
    BadRequest,
    MalformedInput,
    NotFound,
    PolicyDenied,
    TooManyRequests,
    Unauthorized,
)
from ostiary.core.lifetime import parse_duration
from ostiary.provisioners.approval import MAX_NOTE
from ostiary.provisioners.approval_queue import request_view
from ostiary.provisioners.base import validate_provisioner_name
from ostiary.provisioners.ssh import SSHGrant, authorize_ssh
from ostiary.provisioners.ssh_approval import KIND as SSH_KIND
from ostiary.provisioners.ssh_approval import issued_ssh_certificate, submit_ssh_request
from ostiary.provisioners.ssh_identity import authorize_ssh_exchange, authorize_ssh_sign_in
from ostiary.provisioners.ssh_renewal import authorize_host_renewal, issue_renewal_nonce
from ostiary.server.context import ServerContext, server_context
from ostiary.server.credentials import peer_certificate
from ostiary.server.limits import client_address, limits_of
from ostiary.ssh import (
    SSHCertificateType,
    SSHPublicKey,
    ca_public_key_line,
    load_ssh_public_key_line,
)
from ostiary.ssh.krl import KRL_MEDIA_TYPE, KRL_VERSION_HEADER
from ostiary.store import RequestStatus

_TYPES = {"user": SSHCertificateType.USER, "host": SSHCertificateType.HOST}

router = APIRouter(prefix="/ssh", tags=["ssh"])
Context = Annotated[ServerContext, Depends(server_context)]


class SSHCertificateRequest(BaseModel):
    public_key: str = Field(max_length=16384, description="The key, as in a .pub file.")
    token: str | None = Field(default=None, max_length=8192, description="A one-time SSH token.")
    provisioner: str | None = Field(default=None, max_length=128, description="An oidc one.")
    id_token: str | None = Field(
        default=None, max_length=16384, description="An ID token whose nonce commits to the key."
    )
    principals: list[str] | None = Field(
        default=None, max_length=256, description="A subset of the identity's principals."
    )
    type: Literal["user", "host"] | None = None
    lifetime: str | None = Field(default=None, max_length=32, description="e.g. 8h, 30d.")


class SSHExchangeRequest(BaseModel):
    public_key: str = Field(max_length=16384, description="The key, as in a .pub file.")
    principals: list[str] | None = Field(default=None, max_length=256)
    lifetime: str | None = Field(default=None, max_length=32, description="e.g. 8h.")


class SSHSubmitRequest(BaseModel):
    public_key: str = Field(max_length=16384, description="The key, as in a .pub file.")
    provisioner: str = Field(min_length=1, max_length=64, description="An approval one.")
    principals: list[str] = Field(min_length=1, max_length=256)
    note: str | None = Field(default=None, max_length=MAX_NOTE, description="For the officer.")


class SSHRequestAnswer(BaseModel):
    request_id: str
    status: Literal["pending", "approving", "issued", "rejected", "expired"]
    expires_at: str
    code: str | None = Field(None, description="One-time code to tell the officer (once).")
    reason: str | None = None
    certificate: str | None = None


class SSHRenewalNonce(BaseModel):
    nonce: str
    expires_at: str


class SSHRenewRequest(BaseModel):
    certificate: str = Field(max_length=32768, description="The current host certificate line.")
    nonce: str = Field(max_length=128, description="From POST /ssh/renew/nonce.")
    signature: str = Field(
        max_length=4096, description="base64 SSH signature blob by the host key."
    )


class SSHCertificateAnswer(BaseModel):
    certificate: str
    serial: str
    not_after: str


class SSHCAKeysAnswer(BaseModel):
    user_ca: str
    host_ca: str


class SSHStatus(BaseModel):
    status: Literal["valid", "revoked", "expired", "not-yet-valid"]
    principals: list[str]
    key_id: str


def ssh_authority(context: ServerContext) -> SSHAuthority:
    if context.ssh is None:
        raise NotFound("this CA issues no SSH certificates: run 'ostiary ca ssh init'")
    return context.ssh


@router.post("/certificate", response_model=SSHCertificateAnswer)
def issue_ssh_certificate(
    request: Request, body: SSHCertificateRequest, context: Context
) -> SSHCertificateAnswer:
    """An SSH certificate for ``public_key``: the token or the sign-in names the principals.

    Under the per-address limit on refused credentials (as ``/sign``): an address past it is
    refused (429) before its token is looked at; only a refusal counts.
    """
    refused = context.limits.failed_tokens
    address = client_address(request)
    ssh = ssh_authority(context)
    public_key = load_ssh_public_key_line(body.public_key)
    lifetime = _lifetime(body.lifetime)
    if body.token is not None and (body.id_token is not None or body.principals is not None):
        raise BadRequest(
            "a token names the principals itself: send either 'token' or 'provisioner' "
            "with 'id_token' (and, if you like, a subset of its 'principals')"
        )
    if body.token is not None:
        token = body.token
        grant = refused.guard(
            address,
            lambda: authorize_ssh(
                ssh.store,
                token,
                ca=context.ca,
                now=ssh.clock(),
                cert_type=_TYPES[body.type] if body.type else None,
                lifetime=lifetime,
            ),
        )
        via = "token"
    elif body.id_token is not None and body.provisioner is not None:
        if body.type == "host":
            raise PolicyDenied("a sign-in gets user certificates only")
        provisioner, id_token = body.provisioner, body.id_token
        grant = refused.guard(
            address,
            lambda: authorize_ssh_sign_in(
                ssh.store,
                provisioner,
                id_token,
                public_key,
                now=ssh.clock(),
                principals=body.principals,
                lifetime=lifetime,
            ),
        )
        via = "oidc"
    else:
        raise BadRequest("send 'token', or 'provisioner' and 'id_token'")
    return _issue(ssh, public_key, grant, via=via)


@router.post("/exchange", response_model=SSHCertificateAnswer)
def exchange_for_ssh_certificate(
    request: Request, body: SSHExchangeRequest, context: Context
) -> SSHCertificateAnswer:
    """An SSH user certificate for the holder (mTLS) of an X.509 certificate of this CA."""
    ssh = ssh_authority(context)
    certificate = peer_certificate(request)
    if certificate is None:
        raise Unauthorized("connect with your X.509 client certificate (mTLS) to exchange it")
    public_key = load_ssh_public_key_line(body.public_key)
    grant, serial = authorize_ssh_exchange(
        ssh.store,
        certificate,
        ca=context.ca,
        now=ssh.clock(),
        principals=body.principals,
        lifetime=_lifetime(body.lifetime),
    )
    return _issue(
        ssh, public_key, grant, via="x509", actor=f"certificate:{serial}", x509_serial=serial
    )


@router.post("/requests", status_code=202, response_model=SSHRequestAnswer)
def submit_ssh_request_route(
    request: Request, body: SSHSubmitRequest, context: Context
) -> SSHRequestAnswer:
    """Queue an SSH user certificate request for an officer (provisioner type approval)."""
    limits_of(request).requests.check(client_address(request))
    ssh = ssh_authority(context)
    submitted = submit_ssh_request(
        ssh.store,
        validate_provisioner_name(body.provisioner),
        load_ssh_public_key_line(body.public_key),
        body.principals,
        now=ssh.clock(),
        note=body.note,
    )
    return SSHRequestAnswer(
        request_id=submitted.request_id,
        status="pending",
        expires_at=submitted.expires_at.isoformat(),
        code=submitted.code,
    )


@router.get("/requests/{request_id}", response_model=SSHRequestAnswer)
def poll_ssh_request(request_id: str, context: Context) -> SSHRequestAnswer:
    """Where an SSH request stands; the certificate line once an officer approved it."""
    ssh = ssh_authority(context)
    view = request_view(ssh.store, request_id[:64], now=ssh.clock())
    if view.kind != SSH_KIND:
        raise NotFound("no such SSH certificate request")
    return SSHRequestAnswer(
        request_id=view.request_id,
        status=view.status.value,
        expires_at=view.expires_at.isoformat(),
        reason=view.reason if view.status is RequestStatus.REJECTED else None,
        certificate=issued_ssh_certificate(ssh, view)
        if view.status is RequestStatus.ISSUED
        else None,
    )


@router.post("/renew/nonce", response_model=SSHRenewalNonce)
def ssh_renewal_nonce(request: Request, context: Context) -> SSHRenewalNonce:
    """A single-use challenge for a host to sign with its host key (five minutes); each
    client address may ask only so often (429), as for attestation nonces.
    """
    limits_of(request).nonces.check(client_address(request))
    ssh = ssh_authority(context)
    nonce, expires_at = issue_renewal_nonce(ssh.store, now=ssh.clock())
    return SSHRenewalNonce(nonce=nonce, expires_at=expires_at.isoformat())


@router.post("/renew", response_model=SSHCertificateAnswer)
def renew_host_certificate(body: SSHRenewRequest, context: Context) -> SSHCertificateAnswer:
    """A new host certificate, same principals, for the holder of the current one's key."""
    ssh = ssh_authority(context)
    try:
        signature = base64.b64decode(body.signature, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedInput("the signature is not base64") from None
    authorization, public_key = authorize_host_renewal(
        ssh.store,
        body.certificate,
        body.nonce,
        signature,
        host_ca_sha256=ca_key_sha256(ssh.keys.host.public_key()),
        now=ssh.clock(),
    )
    grant = SSHGrant(authorization, None)
    return _issue(ssh, public_key, grant, via="renewal", actor="ssh-host:" + authorization.key_id)


def _issue(
    ssh: SSHAuthority,
    public_key: SSHPublicKey,
    grant: SSHGrant,
    *,
    via: str,
    actor: str | None = None,
    x509_serial: str | None = None,
) -> SSHCertificateAnswer:
    details = {"via": via} if x509_serial is None else {"via": via, "x509_serial": x509_serial}
    issued = ssh.issue(
        public_key,
        grant.authorization,
        actor=actor or f"provisioner:{grant.authorization.provisioner}",
        token=grant.token,
        details=details,
    )
    return SSHCertificateAnswer(
        certificate=issued.line, serial=str(issued.serial), not_after=issued.not_after.isoformat()
    )


@router.get("/ca", response_model=SSHCAKeysAnswer)
def ssh_ca_keys(context: Context) -> SSHCAKeysAnswer:
    keys = ssh_authority(context).keys
    return SSHCAKeysAnswer(
        user_ca=ca_public_key_line(keys.user.public_key()),
        host_ca=ca_public_key_line(keys.host.public_key()),
    )


#: How often a held KRL request reads the revocation count (seconds).
KRL_POLL_SECONDS = 0.25
#: The longest a KRL request may be held (seconds).
KRL_MAX_WAIT = 30.0
#: KRL requests held at once in this process (past it: 429).
KRL_MAX_WAITING = 256
_krl_waiting = 0


@router.get("/krl", response_class=Response, responses={200: {"content": {KRL_MEDIA_TYPE: {}}}})
async def ssh_krl(
    context: Context,
    after: Annotated[int | None, Query(ge=0, description="The version the caller has.")] = None,
    wait: Annotated[float, Query(ge=0, le=KRL_MAX_WAIT, description="Seconds to hold.")] = 0,
) -> Response:
    """The KRL of both SSH CAs: every revoked certificate that was issued here.

    With ``after`` (the ``Ostiary-KRL-Version`` the caller has) and ``wait``, the request is
    held until a revocation makes the version grow, or ``wait`` seconds pass (a long poll:
    ``ostiary ssh krl-watch`` rewrites its file within a second of a revocation). A
    revocation made by another process (``ca ssh revoke``, a replica) is seen by reading
    the count every quarter second while held.
    """
    global _krl_waiting
    ssh = ssh_authority(context)
    version = await run_in_threadpool(ssh.krl_version)
    if after is not None and wait > 0 and version <= after:
        if _krl_waiting >= KRL_MAX_WAITING:
            raise TooManyRequests.wait("too many KRL requests are held: ask again", 1.0)
        _krl_waiting += 1
        try:
            deadline = asyncio.get_running_loop().time() + wait
            while version <= after and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(KRL_POLL_SECONDS)
                version = await run_in_threadpool(ssh.krl_version)
        finally:
            _krl_waiting -= 1
    krl = await run_in_threadpool(ssh.build_krl)
    headers = {"Cache-Control": "no-cache", KRL_VERSION_HEADER: str(version)}
    return Response(krl, media_type=KRL_MEDIA_TYPE, headers=headers)


@router.get("/status/{cert_type}/{serial}", response_model=SSHStatus)
def ssh_status(cert_type: str, serial: str, context: Context) -> SSHStatus:
    ssh = ssh_authority(context)
    kind = _TYPES.get(cert_type)
    if kind is None or not serial.isdigit() or len(serial) > 20:
        raise BadRequest("ask for /ssh/status/user|host/<decimal serial>")
    record = ssh.status(int(serial), cert_type=kind)
    now = ssh.clock()
    status: Literal["valid", "revoked", "expired", "not-yet-valid"] = "valid"
    if record.status == "revoked":
        status = "revoked"
    elif now >= record.not_after:
        status = "expired"
    elif now < record.not_before:
        status = "not-yet-valid"
    return SSHStatus(status=status, principals=list(record.principals), key_id=record.key_id)


def _lifetime(text: str | None) -> timedelta | None:
    if text is None:
        return None
    return parse_duration(text)
