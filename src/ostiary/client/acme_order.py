"""``cert request --acme``: a certificate from any RFC 8555 server (Ostiary's own ACME
provisioners, or another CA), with the key made here and http-01 answered here.

One order, start to end, with the ``acme`` library (certbot's, from PyPI): a new account
(an EC P-256 key made for this request, External Account Binding when given, RFC 8555
section 7.3.4), ``newOrder`` for the CSR's names with the chosen profile
(draft-ietf-acme-profiles), the http-01 challenges answered by a small HTTP server on
``http01_port`` while the server validates, finalize, and the certificate chain. Any
refusal by the server becomes a :class:`BadRequest`/:class:`Unauthorized` of one line; a
server that cannot be reached, :class:`Unavailable`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from acme import challenges, client, crypto_util, errors, messages, standalone
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.json_util import field as json_field
from josepy.jwa import ES256
from josepy.jwk import JWK, JWKEC

from ostiary.core.errors import BadRequest, Unauthorized, Unavailable

USER_AGENT = "ostiary"


@dataclass(frozen=True)
class ExternalAccount:
    """An EAB key id and its HMAC key (the base64url text the CA printed once)."""

    kid: str
    hmac_key: str = field(repr=False)

    @classmethod
    def from_file(cls, kid: str, path: Path) -> ExternalAccount:
        text = path.read_text(encoding="ascii").strip()
        try:
            base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise BadRequest(f"{path} does not hold a base64url HMAC key") from None
        if not text:
            raise BadRequest(f"{path} is empty: it must hold the EAB HMAC key")
        return cls(kid, text)


@dataclass(frozen=True)
class AcmeOrder:
    """Where and how to order: the directory, its TLS trust, the http-01 listener."""

    directory_url: str
    root_file: Path | None = None
    profile: str | None = None
    external_account: ExternalAccount | None = None
    http01_address: str = ""
    http01_port: int = 80
    timeout: float = 90.0


@dataclass(frozen=True)
class AcmeAccountKey:
    """An ACME account: its key and its URL, kept to renew over the same account."""

    private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    url: str


@dataclass(frozen=True)
class Ordered:
    """An order's result: the certificate chain, and the account that ordered it."""

    chain: list[x509.Certificate]
    account: AcmeAccountKey


class _ReplacingOrder(messages.NewOrder):
    """newOrder with RFC 9773 ``replaces`` (the library's ``new_order`` does not send it)."""

    replaces: str = json_field("replaces", omitempty=True)


def order_certificate(
    order: AcmeOrder,
    csr: x509.CertificateSigningRequest,
    *,
    account: AcmeAccountKey | None = None,
    replaces: str | None = None,
) -> Ordered:
    """The issued certificate and its chain for ``csr`` (see the module docstring).

    With ``account`` the order is placed by that existing account (a renewal); ``replaces``
    is the RFC 9773 certID of the certificate it renews.
    """
    with acme_errors(order.directory_url):
        acme, account_key, kept = open_account(order, account)
        csr_pem = csr.public_bytes(serialization.Encoding.PEM)
        placed = _new_order(acme, csr, csr_pem, order.profile, replaces)
        deadline = datetime.now() + timedelta(seconds=order.timeout)
        with _http01_responder(order, placed, account_key) as answers:
            for challenge, response in answers:
                acme.answer_challenge(challenge, response)
            finished = acme.poll_and_finalize(placed, deadline=deadline)
    chain = x509.load_pem_x509_certificates(finished.fullchain_pem.encode("ascii"))
    return Ordered(chain, kept)


def fetch_renewal_window(
    order: AcmeOrder, certificate: x509.Certificate, cert_id: str
) -> tuple[datetime, datetime] | None:
    """The RFC 9773 suggested window of ``certificate``; None if the directory has no
    ``renewalInfo``. Unsigned GETs: no account needed.
    """
    network = _network(order, JWKEC(key=ec.generate_private_key(ec.SECP256R1())))
    with acme_errors(order.directory_url):
        directory = client.ClientV2.get_directory(order.directory_url, network)
        base = directory.to_partial_json().get("renewalInfo")
        if not isinstance(base, str):
            return None
        answer = network.get(f"{base.rstrip('/')}/{cert_id}", content_type="application/json")
        info = messages.RenewalInfo.from_json(answer.json())
    window = info.suggested_window
    return window.start, window.end


def _network(order: AcmeOrder, account_key: JWK) -> client.ClientNetwork:
    # requests takes a CA bundle path where the library's annotation says bool.
    verify: Any = str(order.root_file) if order.root_file is not None else True
    return client.ClientNetwork(account_key, alg=ES256, verify_ssl=verify, user_agent=USER_AGENT)


def _new_account(
    acme: client.ClientV2, order: AcmeOrder, account_key: JWK, directory: messages.Directory
) -> str:
    binding = None
    if order.external_account is not None:
        binding = messages.ExternalAccountBinding.from_data(
            account_public_key=account_key.public_key(),
            kid=order.external_account.kid,
            hmac_key=order.external_account.hmac_key,
            directory=directory,
        )
    registered = acme.new_account(
        messages.NewRegistration.from_data(
            terms_of_service_agreed=True, external_account_binding=binding
        )
    )
    return str(registered.uri)


def _new_order(
    acme: client.ClientV2,
    csr: x509.CertificateSigningRequest,
    csr_pem: bytes,
    profile: str | None,
    replaces: str | None,
) -> messages.OrderResource:
    if replaces is None:
        return acme.new_order(csr_pem, profile=profile)
    dns_names, addresses = crypto_util.get_identifiers_from_x509(csr.subject, csr.extensions)
    identifiers = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=n) for n in dns_names]
    identifiers += [
        messages.Identifier(typ=messages.IDENTIFIER_IP, value=str(a)) for a in addresses
    ]
    request = _ReplacingOrder(identifiers=identifiers, profile=profile or "", replaces=replaces)
    answer = acme._post(acme.directory["newOrder"], request)
    body = messages.Order.from_json(answer.json())
    authorizations = [
        acme._authzr_from_response(acme._post_as_get(url), uri=url) for url in body.authorizations
    ]
    return messages.OrderResource(
        body=body,
        uri=answer.headers.get("Location"),
        authorizations=authorizations,
        csr_pem=csr_pem,
    )


def open_account(
    order: AcmeOrder, account: AcmeAccountKey | None = None
) -> tuple[client.ClientV2, JWK, AcmeAccountKey]:
    """The client acting for ``account``, or for a new account made here (its key too).

    Raises the library's errors: call inside :func:`acme_errors`.
    """
    private_key = account.private_key if account else ec.generate_private_key(ec.SECP256R1())
    account_key = JWKEC(key=private_key)
    network = _network(order, account_key)
    directory = client.ClientV2.get_directory(order.directory_url, network)
    acme = client.ClientV2(directory, net=network)
    if account is None:
        url = _new_account(acme, order, account_key, directory)
    else:
        url = account.url
        network.account = messages.RegistrationResource(body=messages.Registration(), uri=url)
    return acme, account_key, AcmeAccountKey(private_key, url)


@contextmanager
def _http01_responder(
    order: AcmeOrder, placed: messages.OrderResource, account_key: JWK
) -> Iterator[list[tuple[messages.ChallengeBody, challenges.ChallengeResponse]]]:
    """An HTTP server answering the order's http-01 challenges while it is open."""
    resources: set[standalone.HTTP01RequestHandler.HTTP01Resource] = set()
    answers: list[tuple[messages.ChallengeBody, challenges.ChallengeResponse]] = []
    for authorization in placed.authorizations:
        if authorization.body.status == messages.STATUS_VALID:
            continue
        http01 = [
            c for c in authorization.body.challenges if isinstance(c.chall, challenges.HTTP01)
        ]
        if not http01:
            name = authorization.body.identifier.value
            raise BadRequest(f"the ACME server offers no http-01 challenge for {name}")
        response, validation = http01[0].response_and_validation(account_key)
        resources.add(
            standalone.HTTP01RequestHandler.HTTP01Resource(
                chall=http01[0].chall, response=response, validation=validation
            )
        )
        answers.append((http01[0], response))
    try:
        servers = standalone.HTTP01DualNetworkedServers(
            (order.http01_address, order.http01_port), resources
        )
    except OSError as exc:
        raise Unavailable(
            f"cannot listen on port {order.http01_port} for http-01: {exc.strerror or exc}"
        ) from None
    servers.serve_forever()
    try:
        yield answers
    finally:
        servers.shutdown_and_server_close()


@contextmanager
def acme_errors(url: str) -> Iterator[None]:
    """The library's and the network's errors as one line each."""
    try:
        yield
    except messages.Error as exc:
        text = exc.detail or exc.description or exc.typ
        if exc.code in ("unauthorized", "externalAccountRequired", "badSignatureAlgorithm"):
            raise Unauthorized(f"the ACME server refused: {text}") from None
        raise BadRequest(f"the ACME server refused: {text}") from None
    except errors.ValidationError as exc:
        raise Unauthorized(f"the ACME server could not validate: {_failed(exc)}") from None
    except errors.TimeoutError:
        raise Unavailable("the ACME order did not finish in time") from None
    except errors.Error as exc:
        raise BadRequest(f"ACME: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    except requests.RequestException as exc:
        raise Unavailable(f"cannot reach the ACME server at {url}: {type(exc).__name__}") from None


def _failed(exc: errors.ValidationError) -> str:
    for authorization in exc.failed_authzrs:
        for challenge in authorization.body.challenges:
            if challenge.error is not None:
                name = authorization.body.identifier.value
                return f"{name}: {challenge.error.detail or challenge.error.typ}"
    return "a challenge failed"


__all__ = [
    "AcmeAccountKey",
    "AcmeOrder",
    "ExternalAccount",
    "Ordered",
    "fetch_renewal_window",
    "open_account",
    "order_certificate",
]
