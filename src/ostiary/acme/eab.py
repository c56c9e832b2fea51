"""External Account Binding on newAccount (RFC 8555 section 7.3.4): the wire part.

The newAccount payload's ``externalAccountBinding`` is a flattened JWS made with the
HMAC key the CA handed out: protected ``{"alg": HS256|HS384|HS512, "kid", "url"}`` (no
nonce), the account's public JWK as payload, and the MAC. :func:`parse_binding` checks the
shape and the header without the key (the ``kid`` says which key to fetch);
:meth:`Binding.verify` checks the MAC (joserfc compares it in constant time) and that the
payload is the very key that signed the outer request. Which keys exist, whether they are
bound, and what they allow is the provisioner's business (:mod:`ostiary.provisioners.acme_eab`).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import Key, OctKey
from joserfc.jws import FlattenedJSONSerialization

from ostiary.acme.errors import AcmeProblem, malformed, unauthorized
from ostiary.acme.jws import import_account_key, thumbprint
from ostiary.provisioners.acme import AcmeProvisioner
from ostiary.provisioners.acme_eab import open_eab_key
from ostiary.signers.sealing import Sealer
from ostiary.store import Store

#: MAC algorithms a binding may use.
EAB_ALGORITHMS: tuple[str, ...] = ("HS256", "HS384", "HS512")
_REGISTRY = jws.JWSRegistry(algorithms=list(EAB_ALGORITHMS), strict_check_header=False)


def external_account_required() -> AcmeProblem:
    return AcmeProblem(
        "externalAccountRequired",
        "this directory requires External Account Binding: ask the CA operator for a key "
        "(ostiary ca acme eab add) and send it with newAccount",
    )


@dataclass(frozen=True)
class Binding:
    """A parsed, not yet verified, external account binding."""

    kid: str
    alg: str
    document: dict[str, str]

    def verify(self, hmac_key: bytes, account_key: Key) -> None:
        """The MAC verifies with ``hmac_key`` and the payload is ``account_key``; else
        ``unauthorized`` (nothing says which of the two failed first).
        """
        try:
            verified = jws.deserialize_json(
                cast(FlattenedJSONSerialization, self.document),
                OctKey.import_key(hmac_key),
                algorithms=[self.alg],
                registry=_REGISTRY,
            )
        except (JoseError, ValueError, TypeError):
            raise unauthorized("the external account binding's MAC does not verify") from None
        try:
            bound = json.loads(verified.payload)
        except (ValueError, UnicodeDecodeError):
            raise malformed("the external account binding's payload is not a JWK") from None
        if not isinstance(bound, dict) or thumbprint(import_account_key(bound)) != thumbprint(
            account_key
        ):
            raise unauthorized("the external account binding names another account key")


def parse_binding(value: object, *, url: str) -> Binding:
    """Shape and header of ``externalAccountBinding``: HS*, a ``kid``, no nonce, ``url``."""
    if (
        not isinstance(value, dict)
        or set(value) != {"protected", "payload", "signature"}
        or not all(isinstance(v, str) for v in value.values())
    ):
        raise malformed("externalAccountBinding must be a flattened JWS")
    header = _header(value["protected"])
    alg = header.get("alg")
    if alg not in EAB_ALGORITHMS:
        raise AcmeProblem(
            "badSignatureAlgorithm",
            f"an external account binding is MACed with {', '.join(EAB_ALGORITHMS)}, "
            f"not {str(alg)[:16]!r}",
        )
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > 64:
        raise malformed("the external account binding needs the key id ('kid') it was given")
    if "nonce" in header:
        raise malformed("an external account binding must not carry a nonce")
    if header.get("url") != url:
        raise unauthorized("the external account binding's 'url' is not the newAccount URL")
    return Binding(kid=kid, alg=str(alg), document=dict(value))


def verified_binding(
    store: Store,
    sealer: Sealer | None,
    provisioner: AcmeProvisioner,
    value: object,
    account_key: Key,
    *,
    url: str,
) -> str | None:
    """The key id of a newAccount's verified binding; None when none was sent and the
    provisioner does not require one (``externalAccountRequired`` when it does).
    """
    if value is None:
        if provisioner.require_eab:
            raise external_account_required()
        return None
    binding = parse_binding(value, url=url)
    if sealer is None:
        raise AcmeProblem(
            "serverInternal",
            "this server was started without the CA password: it cannot check external "
            "account bindings",
            status=HTTPStatus.SERVICE_UNAVAILABLE,
        )
    binding.verify(open_eab_key(store, sealer, provisioner.name, binding.kid), account_key)
    return binding.kid


def _header(protected: str) -> dict[str, Any]:
    try:
        header = json.loads(base64.urlsafe_b64decode(protected + "=" * (-len(protected) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise malformed("the external account binding's header is not base64url JSON") from None
    if not isinstance(header, dict):
        raise malformed("the external account binding's header must be a JSON object")
    return header


__all__ = [
    "EAB_ALGORITHMS",
    "Binding",
    "external_account_required",
    "parse_binding",
    "verified_binding",
]
