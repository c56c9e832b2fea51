"""Orders (RFC 8555 sections 7.1.3, 7.4): newOrder, reading, listing (finalize and the
download: :mod:`ostiary.acme.finalize`).

newOrder checks everything it can before anything is stored: the identifiers (types, syntax,
a challenge able to prove each), the profile (draft-ietf-acme-profiles: unknown names get
``invalidProfile``), the requested validity within the claims, and the names within the
provisioner's patterns and the profile's name kinds. Each identifier gets its own
authorization, never shared with another order. The account's limits and its EAB key's
names are read in Core (:func:`ostiary.store.acme_reads.account_limits`), and the rows
written in one group-commit unit.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509

from ostiary.acme.accounts import Authenticated
from ostiary.acme.errors import AcmeProblem, malformed, unauthorized
from ostiary.acme.renewal_info import check_replaces
from ostiary.acme.resources import Answer, Urls, order_json
from ostiary.acme.validation import VALIDATORS
from ostiary.authority.authority import Authority
from ostiary.core.errors import (
    BadRequest,
    NameNotAuthorized,
    NotFound,
    OstiaryError,
    TooManyRequests,
)
from ostiary.core.names import (
    parse_san,
    validate_dns_name,
)
from ostiary.core.profiles import get_profile
from ostiary.provisioners.acme import AcmeProvisioner, general_name_of
from ostiary.provisioners.acme_eab import check_account_names
from ostiary.provisioners.enrollment import pending_client_id
from ostiary.store import (
    AcmeAuthorization,
    AcmeChallenge,
    AcmeOrder,
    AcmeRepository,
)
from ostiary.store.acme import new_id
from ostiary.store.acme_reads import account_limits, order_with_authorizations
from ostiary.store.acme_writes import insert_rows
from ostiary.store.group_commit import Batch

#: How long an order (and its authorizations) may take to finish.
ORDER_TTL = timedelta(hours=24)
#: Identifiers one order may name.
MAX_IDENTIFIERS = 100
#: Orders per page of an account's orders list (section 7.1.2.1, ``Link: rel="next"``).
ORDERS_PER_PAGE = 20
#: The window of the orders-per-account limit.
RATE_WINDOW = timedelta(hours=1)
#: A notBefore this far in the past is tolerated (clock skew); later ones are refused.
NOT_BEFORE_SKEW = timedelta(minutes=5)


def new_order(
    authority: Authority,
    urls: Urls,
    provisioner: AcmeProvisioner,
    auth: Authenticated,
    *,
    now: datetime,
) -> Answer:
    """newOrder: validate, then store the order, its authorizations and challenges."""
    payload = auth.payload or {}
    identifiers = _identifiers(payload.get("identifiers"), provisioner)
    profile = payload.get("profile", provisioner.default_profile)
    if not isinstance(profile, str) or profile not in provisioner.profiles:
        raise AcmeProblem(
            "invalidProfile",
            f"unknown profile {str(profile)[:32]!r}: this directory offers "
            f"{', '.join(provisioner.profiles)}",
        )
    not_before = _time(payload.get("notBefore"), "notBefore")
    not_after = _time(payload.get("notAfter"), "notAfter")
    if not_before is not None and not_before > now + NOT_BEFORE_SKEW:
        raise malformed("notBefore in the future is not supported: certificates start now")
    if not_after is not None:
        lifetime = provisioner.claims.lifetime
        if not (now + lifetime.minimum <= not_after <= now + lifetime.maximum):
            raise malformed(
                "notAfter must lie within the provisioner's lifetime "
                f"({lifetime.minimum} to {lifetime.maximum} from now)"
            )
    try:
        bound = _client_id_names(authority, provisioner, identifiers, now=now)
        if bound is None:
            names = list(
                provisioner.authorize_order(identifiers, profile=profile, not_after=not_after).names
            )
        else:  # the names the ClientIdentifier was bound to
            names = [parse_san(text) for text in bound[1]]
        get_profile(profile).check_names(names)
    except BadRequest as exc:
        raise AcmeProblem("rejectedIdentifier", exc.detail) from None
    replaces = check_replaces(
        authority.store,
        provisioner.name,
        auth.account_id,
        payload.get("replaces"),
        identifiers,
        now=now,
    )
    order = AcmeOrder(
        id=new_id(),
        account_id=auth.account_id,
        provisioner=provisioner.name,
        status="pending",
        identifiers=identifiers,
        profile=profile,
        not_before=not_before,
        not_after=not_after,
        expires_at=now + ORDER_TTL,
        created_at=now,
        error=None,
        serial=None,
        replaces=replaces,
    )
    authorizations: list[AcmeAuthorization] = []
    challenges: list[AcmeChallenge] = []
    for identifier in identifiers:
        value = identifier["value"]
        wildcard = value.startswith("*.")
        authz = AcmeAuthorization(
            id=new_id(),
            order_id=order.id,
            account_id=auth.account_id,
            identifier_type=identifier["type"],
            identifier_value=value.removeprefix("*."),
            wildcard=wildcard,
            status="pending",
            expires_at=order.expires_at,
            token=secrets.token_urlsafe(32),
            attested_spki=None,
            hardware_key=False,
        )
        authorizations.append(authz)
        challenges.extend(
            AcmeChallenge(
                id=new_id(),
                authorization_id=authz.id,
                type=challenge_type,
                status="pending",
                validated_at=None,
                error=None,
            )
            for challenge_type in offered_challenges(provisioner, identifier["type"], wildcard)
        )
    insert = insert_rows([order, *authorizations, *challenges])

    def checked_insert(batch: Batch) -> OstiaryError | None:
        # The account's limits, read in the transaction that spends the nonce and stores the
        # order: a refusal writes nothing and is raised once the spending committed.
        placed, oldest, pending, key_names = account_limits(
            batch.connection, auth.account_id, since=now - RATE_WINDOW, now=now
        )
        try:
            _check_external_account_names(key_names, names)
            _check_limits(provisioner, placed, oldest, pending, len(identifiers), now)
        except OstiaryError as refusal:
            return refusal
        insert(batch)
        return None

    # One commit shared with concurrent requests' writes (ostiary.store.group_commit), the
    # request's nonce spent in it.
    refusal = auth.nonce.write(checked_insert)
    if refusal is not None:
        raise refusal
    body = order_json(urls, order, authorizations, now=now)
    return Answer(201, body, {"Location": urls.resource("order", order.id)})


def _check_external_account_names(
    patterns: Sequence[str] | None, names: Sequence[x509.GeneralName]
) -> None:
    """The names an account bound with a narrowed EAB key may order (section 7.3.4)."""
    try:
        check_account_names(patterns, names)
    except NameNotAuthorized as exc:
        raise AcmeProblem(
            "rejectedIdentifier",
            f"{exc.data.get('name', 'a name')} is outside the names this account's external "
            "account key allows",
        ) from None


def _check_limits(
    provisioner: AcmeProvisioner,
    placed: int,
    oldest: datetime | None,
    pending: int,
    new_authorizations: int,
    now: datetime,
) -> None:
    """Orders per account per hour (``placed`` in the window, the ``oldest`` of them) and
    ``pending`` authorizations per account, with this order's new ones (``rateLimited``).

    Counted in the database, so the limits hold across replicas (two racing requests may
    both pass at the edge: a limit, not an invariant).
    """
    if placed >= provisioner.orders_per_hour:
        wait = (oldest + RATE_WINDOW - now).total_seconds() if oldest is not None else 60.0
        raise TooManyRequests.wait(
            f"this account placed {placed} orders in the last hour; the limit is "
            f"{provisioner.orders_per_hour}",
            wait,
        )
    if pending + new_authorizations > provisioner.max_pending_authorizations:
        raise TooManyRequests.wait(
            f"this account holds {pending} pending authorizations; the limit is "
            f"{provisioner.max_pending_authorizations}: finish or deactivate some first",
            60.0,
        )


def offered_challenges(
    provisioner: AcmeProvisioner, identifier_type: str, wildcard: bool
) -> tuple[str, ...]:
    """The challenges offered: enabled by the provisioner and validated by this server."""
    return tuple(
        c for c in provisioner.challenges_for(identifier_type, wildcard=wildcard) if c in VALIDATORS
    )


def _identifiers(value: object, provisioner: AcmeProvisioner) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value or len(value) > MAX_IDENTIFIERS:
        raise malformed(f"identifiers must be a list of 1 to {MAX_IDENTIFIERS} objects")
    seen: dict[tuple[str, str], dict[str, str]] = {}
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise malformed("each identifier is an object with a type and a value")
        kind, raw = item["type"], item.get("value")
        if not isinstance(raw, str) or not raw:
            raise malformed("each identifier needs a string value")
        normalized = _normalize(kind, raw)
        wildcard = normalized.startswith("*.")
        if not offered_challenges(provisioner, kind, wildcard):
            how = "only dns-01 proves a wildcard" if wildcard else "no enabled challenge proves it"
            raise AcmeProblem("rejectedIdentifier", f"{kind} identifier {normalized[:64]!r}: {how}")
        seen.setdefault((kind, normalized), {"type": kind, "value": normalized})
    kinds = {kind for kind, _ in seen}
    if "hardware-module" in kinds and "permanent-identifier" not in kinds:
        raise AcmeProblem(
            "rejectedIdentifier",
            "a hardware-module identifier is proved but not written into the certificate "
            "(the draft's privacy-preserving form): order it with the device's "
            "permanent-identifier",
        )
    return list(seen.values())


def _normalize(kind: str, value: str) -> str:
    try:
        if kind == "dns":
            return validate_dns_name(value.lower(), allow_wildcard=True)
        if kind == "ip":
            return str(ipaddress.ip_address(value))
        if kind == "permanent-identifier":
            general_name_of(kind, value)
            return value
        if kind == "hardware-module":
            if not 0 < len(value) <= 128 or not value.isprintable():
                raise ValueError("the value is the module's serial number, 1 to 128 characters")
            return value
    except (BadRequest, ValueError) as exc:
        raise AcmeProblem("rejectedIdentifier", f"{kind} identifier: {exc}") from None
    raise AcmeProblem("unsupportedIdentifier", f"identifier type {kind[:32]!r} is not supported")


def _client_id_names(
    authority: Authority,
    provisioner: AcmeProvisioner,
    identifiers: Sequence[Mapping[str, str]],
    *,
    now: datetime,
) -> tuple[str, tuple[str, ...]] | None:
    """The names of an unused ClientIdentifier the order names as its one identifier: the
    certificate gets these, the identifier itself is only the one-time secret.
    """
    if len(identifiers) != 1 or identifiers[0]["type"] != "permanent-identifier":
        return None
    if "device-attest-01" not in provisioner.challenges:
        return None
    with authority.store.transaction(read_only=True) as session:
        return pending_client_id(session, provisioner.name, identifiers[0]["value"], now=now)


def _time(value: object, what: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise malformed(f"{what} must be an RFC 3339 time")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise malformed(f"{what} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise malformed(f"{what} needs a time zone")
    return moment


def _owned_order(
    repository: AcmeRepository, order_id: str, auth: Authenticated, provisioner: str
) -> AcmeOrder:
    order = repository.order(order_id, provisioner=provisioner)
    if order.account_id != auth.account_id:
        raise unauthorized("this order belongs to another account")
    return order


def read_order(
    authority: Authority,
    urls: Urls,
    provisioner: str,
    order_id: str,
    auth: Authenticated,
    *,
    now: datetime,
) -> Answer:
    # Polled: read in Core, in the unit that spends the request's nonce.
    found = auth.nonce.write(lambda batch: order_with_authorizations(batch.connection, order_id))
    if found is None or found[0].provisioner != provisioner:
        raise NotFound(f"no order {order_id[:40]!r}")
    order, authorizations = found
    if order.account_id != auth.account_id:
        raise unauthorized("this order belongs to another account")
    body = order_json(urls, order, authorizations, now=now)
    return Answer(200, body, _retry_if_processing(body))


def list_orders(
    authority: Authority, urls: Urls, account_id: str, auth: Authenticated, *, cursor: str | None
) -> Answer:
    """The account's orders (section 7.1.2.1), a page at a time, ``Link: rel="next"``."""
    if auth.account_id != account_id:
        raise unauthorized("an account's orders are listed with its own key")
    with authority.store.transaction(read_only=True) as session:
        orders = AcmeRepository(session).orders_of(
            account_id, after=cursor, limit=ORDERS_PER_PAGE + 1
        )
    page = orders[:ORDERS_PER_PAGE]
    headers: dict[str, str] = {}
    if len(orders) > ORDERS_PER_PAGE:
        next_url = f"{urls.resource('orders', account_id)}?cursor={page[-1].id}"
        headers["Link"] = f'<{next_url}>;rel="next"'
    return Answer(200, {"orders": [urls.resource("order", o.id) for o in page]}, headers)


def _retry_if_processing(body: dict[str, Any]) -> dict[str, str]:
    return {"Retry-After": "1"} if body.get("status") == "processing" else {}


__all__ = [
    "MAX_IDENTIFIERS",
    "ORDERS_PER_PAGE",
    "ORDER_TTL",
    "list_orders",
    "new_order",
    "offered_challenges",
    "read_order",
]
