"""Request authentication and accounts (RFC 8555 sections 6.2, 7.3).

:func:`authenticate` is the one door of every POST: it finds the key (the account a
``kid`` names, or the ``jwk``) and verifies the signature; the nonce is spent in the
database (:mod:`ostiary.acme.nonces`: one ``DELETE``, a nonce is accepted once, whichever
replica sees it) there, or, for an operation that writes anyway, in that write.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from typing import Any, NoReturn

from joserfc.jwk import Key
from sqlalchemy.exc import IntegrityError

from ostiary.acme.account_keys import AccountRecord, forget_account, known_account
from ostiary.acme.errors import AcmeProblem, malformed, unauthorized
from ostiary.acme.jws import (
    JwsRequest,
    import_account_key,
    parse_request,
    thumbprint,
)
from ostiary.acme.nonces import NONCE_TTL, NonceSpend, bad_nonce, refuse_bad_nonce
from ostiary.acme.resources import Answer, Urls, account_json
from ostiary.provisioners.acme_eab import bind_eab_key
from ostiary.store import AcmeAccount, AcmeRepository, AuditLog, Store
from ostiary.store.acme import new_id
from ostiary.store.acme_writes import BAD_NONCE, exchange_nonce

#: Contacts an account may list.
MAX_CONTACTS = 4


@dataclass(frozen=True)
class Authenticated:
    """A verified request: its key, its account (None for a ``jwk`` request), its payload,
    the nonce for the answer, and the spending of the request's nonce (done, or left to
    the operation: ``authenticate(defer=True)``), which records the answer's.
    """

    key: Key
    account: AccountRecord | None
    payload: dict[str, Any] | None
    request: JwsRequest
    next_nonce: str
    nonce: NonceSpend

    @property
    def account_id(self) -> str:
        if self.account is None:  # pragma: no cover - routes needing one ask for a kid
            raise malformed("this request must be signed by an account (kid)")
        return self.account.id


def authenticate(
    store: Store,
    urls: Urls,
    provisioner: str,
    *,
    content_type: str | None,
    body: bytes,
    url: str,
    key_by: str,
    now: datetime,
    defer: bool = False,
) -> Authenticated:
    """Parse and verify one request, and spend its nonce (see the module docstring); with
    ``defer``, the caller spends it (:class:`~ostiary.acme.nonces.NonceSpend`).

    A ``kid`` names an account, taken from the process's cache
    (:mod:`ostiary.acme.account_keys`); the transaction that spends the nonce checks that the
    account is still valid with that key, and if it is not, spends nothing: the request is
    verified again against the account as the database holds it now, which gives its error.
    """
    request = parse_request(content_type, body, url=url, key_by=key_by)
    next_nonce = secrets.token_urlsafe(24)
    expires_at = now + NONCE_TTL
    if request.kid is None:
        key = import_account_key(request.jwk or {})
        payload = request.payload_json(key)
        exchange = exchange_nonce(request.nonce, next_nonce, now=now, expires_at=expires_at)
        spend = NonceSpend(store, exchange, refuse_bad_nonce, now=now)
        account = None
    else:
        account_id = urls.account_id_of(request.kid)
        account, payload = _verified(store, request, account_id, provisioner, fresh=False)
        key = account.key
        exchange = exchange_nonce(
            request.nonce,
            next_nonce,
            now=now,
            expires_at=expires_at,
            account=(account.id, account.thumbprint),
        )

        def refused(outcome: str) -> NoReturn:
            if outcome == BAD_NONCE:
                raise bad_nonce()
            forget_account(store, account_id)  # changed by another replica: read it again
            _verified(store, request, account_id, provisioner, fresh=True)
            raise unauthorized("the account changed while this request was checked: send it again")

        spend = NonceSpend(store, exchange, refused, now=now)
    if not defer:
        spend.settle()
    return Authenticated(key, account, payload, request, next_nonce, spend)


def _verified(
    store: Store, request: JwsRequest, account_id: str, provisioner: str, *, fresh: bool
) -> tuple[AccountRecord, dict[str, Any] | None]:
    """The account ``account_id`` of ``provisioner`` if valid, and the request's payload
    verified with its key (from the process's cache unless ``fresh``).
    """
    account = known_account(store, account_id, fresh=fresh)
    if account is None or account.provisioner != provisioner:
        raise AcmeProblem("accountDoesNotExist", "no such account", status=HTTPStatus.BAD_REQUEST)
    if account.status != "valid":
        raise unauthorized(f"the account is {account.status}")
    return account, request.payload_json(account.key)


def check_contacts(value: object) -> list[str]:
    """``mailto:`` contacts only (section 7.3): ``unsupportedContact``/``invalidContact``."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_CONTACTS:
        raise AcmeProblem("invalidContact", f"contact must be a list of at most {MAX_CONTACTS}")
    contacts: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item.startswith("mailto:"):
            raise AcmeProblem("unsupportedContact", "only mailto: contacts are supported")
        address = item.removeprefix("mailto:")
        # One "@", no list separators, spaces or control characters (a NUL was stored on
        # SQLite and a 500 on PostgreSQL), at most 254 characters.
        if (
            address.count("@") != 1
            or len(item) > 254
            or any(c in " ,<>\x7f" or c < " " for c in address)
        ):
            raise AcmeProblem("invalidContact", f"not an email address: {address[:64]!r}")
        contacts.append(item)
    return contacts


def new_account(
    store: Store,
    urls: Urls,
    provisioner: str,
    auth: Authenticated,
    *,
    now: datetime,
    admit: Callable[[], None] = lambda: None,
    external_account: Callable[[Any], str | None] = lambda _binding: None,
) -> Answer:
    """The newAccount resource (section 7.3): the existing account of this key, or a new one.

    ``admit`` is called before an account is made (the per-address limit); it raises to
    refuse. ``external_account`` is then given the payload's ``externalAccountBinding``
    (section 7.3.4) and returns the id of the verified key to bind, or None; the key is
    spent in the transaction that makes the account.
    """
    payload = auth.payload or {}
    key_id = thumbprint(auth.key)
    with store.transaction() as session:
        existing = AcmeRepository(session).account_by_thumbprint(key_id)
        if existing is not None:
            if existing.provisioner != provisioner:
                raise unauthorized("this key belongs to an account of another provisioner")
            if existing.status != "valid":  # section 7.3.6: its key is refused from now on
                raise unauthorized(f"the account of this key is {existing.status}")
            location = urls.resource("account", existing.id)
            return Answer(200, account_json(urls, existing), {"Location": location})
    if payload.get("onlyReturnExisting") is True:
        raise AcmeProblem("accountDoesNotExist", "no account has this key")
    contacts = check_contacts(payload.get("contact"))
    admit()
    eab_kid = external_account(payload.get("externalAccountBinding"))
    account = AcmeAccount(
        id=new_id(),
        provisioner=provisioner,
        jwk=auth.key.as_dict(private=False),
        thumbprint=key_id,
        status="valid",
        contact=contacts,
        created_at=now,
    )
    try:
        with store.transaction() as session:
            session.add(account)
            session.flush()
            if eab_kid is not None:
                bind_eab_key(session, eab_kid, account.id, now=now)
            AuditLog(session).append(
                "acme.account.created",
                at=now,
                actor=f"acme:{account.id}",
                target=provisioner,
                details={"account": account.id, "thumbprint": key_id, "eab_kid": eab_kid},
            )
            body = account_json(urls, account)
    except IntegrityError:  # the same key registered on another replica just now
        with store.transaction(read_only=True) as session:
            existing = AcmeRepository(session).account_by_thumbprint(key_id)
            if existing is None:  # pragma: no cover - the row that conflicted is there
                raise
            return Answer(
                200,
                account_json(urls, existing),
                {"Location": urls.resource("account", existing.id)},
            )
    return Answer(201, body, {"Location": urls.resource("account", account.id)})


def update_account(
    store: Store, urls: Urls, account_id: str, auth: Authenticated, *, now: datetime
) -> Answer:
    """POST to the account URL: read it, change its contacts, or deactivate it (7.3.2, 7.3.6)."""
    if auth.account_id != account_id:
        raise unauthorized("an account can only be read or changed with its own key")
    payload = auth.payload
    with store.transaction() as session:
        account = AcmeRepository(session).account(account_id, provisioner=auth.account.provisioner)  # type: ignore[union-attr]
        if payload is not None:
            if "contact" in payload:
                account.contact = check_contacts(payload["contact"])
            status = payload.get("status")
            if status is not None:
                if status != "deactivated":
                    raise malformed("an account's status can only be set to 'deactivated'")
                account.status = "deactivated"
                AuditLog(session).append(
                    "acme.account.deactivated",
                    at=now,
                    actor=f"acme:{account.id}",
                    target=account.provisioner,
                    details={"account": account.id},
                )
        body = account_json(urls, account)
    if payload is not None and payload.get("status") is not None:
        forget_account(store, account_id)  # other replicas see it where nonces are spent
    return Answer(200, body, {"Location": urls.resource("account", account_id)})


def change_key(store: Store, urls: Urls, auth: Authenticated, *, url: str, now: datetime) -> Answer:
    """The keyChange resource (section 7.3.5): the inner JWS, signed by the new key, names
    the account and the old key; the new key must not belong to another account.
    """
    inner = parse_request(
        "application/jose+json",
        _json_bytes(auth.payload),
        url=url,
        key_by="jwk",
        nonce_required=False,
    )
    if "nonce" in inner.header:
        raise malformed("the inner JWS of a key change must not carry a nonce")
    new_key = import_account_key(inner.jwk or {})
    change = inner.payload_json(new_key)
    if change is None:
        raise malformed("the inner JWS of a key change needs a payload")
    account = auth.account
    if account is None:  # pragma: no cover - the route asks for a kid
        raise malformed("a key change is signed by the account (kid)")
    if change.get("account") != urls.resource("account", account.id):
        raise unauthorized("the key change names another account")
    old = change.get("oldKey")
    if not isinstance(old, dict) or thumbprint(import_account_key(old)) != account.thumbprint:
        raise unauthorized("'oldKey' is not the account's current key")
    new_thumbprint = thumbprint(new_key)
    try:
        with store.transaction() as session:
            repository = AcmeRepository(session)
            holder = repository.account_by_thumbprint(new_thumbprint)
            if holder is not None:
                raise AcmeProblem(
                    "malformed",
                    "the new key already belongs to an account",
                    status=HTTPStatus.CONFLICT,
                    location=urls.resource("account", holder.id),
                )
            row = repository.account(account.id, provisioner=account.provisioner)
            row.jwk = new_key.as_dict(private=False)
            row.thumbprint = new_thumbprint
            session.flush()
            AuditLog(session).append(
                "acme.account.key_changed",
                at=now,
                actor=f"acme:{account.id}",
                target=account.provisioner,
                details={"account": account.id, "thumbprint": new_thumbprint},
            )
            body = account_json(urls, row)
    except IntegrityError:
        raise AcmeProblem(
            "malformed", "the new key already belongs to an account", status=HTTPStatus.CONFLICT
        ) from None
    forget_account(store, account.id)
    return Answer(200, body, {"Location": urls.resource("account", account.id)})


def _json_bytes(payload: dict[str, Any] | None) -> bytes:
    if payload is None:
        raise malformed("a key change carries the inner JWS as its payload")
    return json.dumps(payload).encode("utf-8")


__all__ = [
    "Authenticated",
    "authenticate",
    "change_key",
    "check_contacts",
    "new_account",
    "update_account",
]
