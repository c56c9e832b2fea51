"""The URLs of an ACME provisioner's resources and their JSON (RFC 8555 section 7.1)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ostiary.acme.errors import AcmeProblem
from ostiary.store import AcmeAccount, AcmeAuthorization, AcmeChallenge, AcmeOrder

#: What an id in an ACME URL is made of (base64url, :func:`ostiary.store.acme.new_id`).
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Answer:
    """What an ACME operation answers: a status, a JSON body (or PEM text), headers."""

    status: int
    body: dict[str, Any] | str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Urls:
    """Every URL under ``<origin>/acme/<provisioner>``."""

    base: str

    @classmethod
    def of(cls, origin: str, provisioner: str) -> Urls:
        return cls(f"{origin.rstrip('/')}/acme/{provisioner}")

    @property
    def directory(self) -> str:
        return f"{self.base}/directory"

    def resource(self, kind: str, resource_id: str = "") -> str:
        return f"{self.base}/{kind}/{resource_id}" if resource_id else f"{self.base}/{kind}"

    def account_id_of(self, kid: str) -> str:
        """The account id a ``kid`` names; ``accountDoesNotExist`` for a foreign URL."""
        prefix = self.resource("account", "")
        account_id = kid[len(prefix) + 1 :] if kid.startswith(prefix + "/") else ""
        if not _ID.fullmatch(account_id):  # ids are base64url (store.acme.new_id)
            raise AcmeProblem(
                "accountDoesNotExist", "the 'kid' is not an account URL of this directory"
            )
        return account_id


def account_json(urls: Urls, account: AcmeAccount) -> dict[str, Any]:
    return {
        "status": account.status,
        "contact": list(account.contact),
        "orders": urls.resource("orders", account.id),
    }


def order_status(order: AcmeOrder, *, now: datetime) -> str:
    """The stored status, or ``invalid`` once an unfinished order expired (section 7.1.6)."""
    if order.status in ("pending", "ready") and order.expires_at <= now:
        return "invalid"
    return order.status


def order_json(
    urls: Urls, order: AcmeOrder, authorizations: list[AcmeAuthorization], *, now: datetime
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": order_status(order, now=now),
        "expires": rfc3339(order.expires_at),
        "identifiers": list(order.identifiers),
        "authorizations": [urls.resource("authz", a.id) for a in authorizations],
        "finalize": urls.resource("order", order.id) + "/finalize",
        "profile": order.profile,
    }
    if order.not_before is not None:
        body["notBefore"] = rfc3339(order.not_before)
    if order.not_after is not None:
        body["notAfter"] = rfc3339(order.not_after)
    if order.replaces is not None:
        body["replaces"] = order.replaces  # RFC 9773 section 5
    if order.error is not None:
        body["error"] = order.error
    if order.serial is not None and order.status == "valid":
        body["certificate"] = urls.resource("cert", order.id)
    return body


def authorization_status(authz: AcmeAuthorization, *, now: datetime) -> str:
    if authz.status in ("pending", "valid") and authz.expires_at <= now:
        return "expired"
    return authz.status


def challenge_json(urls: Urls, challenge: AcmeChallenge, token: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": challenge.type,
        "url": urls.resource("chall", challenge.id),
        "status": challenge.status,
        "token": token,
    }
    if challenge.validated_at is not None:
        body["validated"] = rfc3339(challenge.validated_at)
    if challenge.error is not None:
        body["error"] = challenge.error
    return body


def authorization_json(
    urls: Urls, authz: AcmeAuthorization, challenges: list[AcmeChallenge], *, now: datetime
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "identifier": {"type": authz.identifier_type, "value": authz.identifier_value},
        "status": authorization_status(authz, now=now),
        "expires": rfc3339(authz.expires_at),
        "challenges": [challenge_json(urls, c, authz.token) for c in challenges],
    }
    if authz.wildcard:
        body["wildcard"] = True
    return body


__all__ = [
    "Answer",
    "Urls",
    "account_json",
    "authorization_json",
    "authorization_status",
    "challenge_json",
    "order_json",
    "order_status",
    "rfc3339",
]
