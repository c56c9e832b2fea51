"""SSH certificates over HTTPS (docs/ssh.md).

- ``POST /ssh/certificate``: ``{"public_key", "token", "type"?, "lifetime"?}`` -> the
  certificate line. The token (``ostiary ca token --ssh``) names the principals.
- ``GET /ssh/ca``: the user and host CA public keys, as sshd and known_hosts take them.
- ``GET /ssh/krl``: the KRL (also on the plain-HTTP listener, ``server/public_http.py``).
- ``GET /ssh/status/{type}/{serial}``: whether a certificate is valid now, and its
  principals; what ``ostiary ssh principals-command`` asks on every login.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ostiary.authority.ssh import SSHAuthority
from ostiary.core.errors import BadRequest, NotFound
from ostiary.core.lifetime import parse_duration
from ostiary.provisioners.ssh import authorize_ssh
from ostiary.server.context import ServerContext, server_context
from ostiary.ssh import SSHCertificateType, ca_public_key_line, load_ssh_public_key_line
from ostiary.ssh.krl import KRL_MEDIA_TYPE

_TYPES = {"user": SSHCertificateType.USER, "host": SSHCertificateType.HOST}

router = APIRouter(prefix="/ssh", tags=["ssh"])
Context = Annotated[ServerContext, Depends(server_context)]


class SSHCertificateRequest(BaseModel):
    public_key: str = Field(max_length=16384, description="The key, as in a .pub file.")
    token: str = Field(max_length=8192, description="A one-time SSH token.")
    type: Literal["user", "host"] | None = None
    lifetime: str | None = Field(default=None, max_length=32, description="e.g. 8h, 30d.")


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
def issue_ssh_certificate(body: SSHCertificateRequest, context: Context) -> SSHCertificateAnswer:
    """An SSH certificate for ``public_key`` with the principals the token grants."""
    ssh = ssh_authority(context)
    public_key = load_ssh_public_key_line(body.public_key)
    lifetime = _lifetime(body.lifetime)
    grant = authorize_ssh(
        ssh.store,
        body.token,
        ca=context.ca,
        now=ssh.clock(),
        cert_type=_TYPES[body.type] if body.type else None,
        lifetime=lifetime,
    )
    issued = ssh.issue(
        public_key,
        grant.authorization,
        actor=f"provisioner:{grant.authorization.provisioner}",
        token=grant.token,
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


@router.get("/krl", response_class=Response, responses={200: {"content": {KRL_MEDIA_TYPE: {}}}})
async def ssh_krl(context: Context) -> Response:
    """The KRL of both SSH CAs: every revoked certificate that was issued here."""
    krl = await run_in_threadpool(ssh_authority(context).build_krl)
    return Response(krl, media_type=KRL_MEDIA_TYPE, headers={"Cache-Control": "no-cache"})


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
