"""Provisioners: ways of proving who may get which certificate.

The server and the CLI call these functions; each raises only
:class:`~ostiary.core.errors.OstiaryError` subclasses for bad credentials (garbage, wrong
``alg``, expired, bad signature, unknown provisioner: ``Unauthorized``; a replay:
``TokenReused``; names or lifetimes outside what is allowed: ``PolicyDenied``).

Sign (one-time ``jwk`` tokens)
    :func:`authorize_sign`, :func:`mint_sign_token`; for the server :func:`verify_sign_token`
    and :func:`sign_token_spend` (spent with the certificate) and :class:`ProvisionerCache`
Renew and revoke with the certificate's own key (``x5c`` tokens)
    :func:`verify_holder_token`, :func:`mint_holder_token`, :func:`renewal_authorization`
Administration
    :func:`verify_admin_token`, :func:`mint_admin_token`, :func:`add_jwk_provisioner`,
    :func:`remove_provisioner`, :func:`list_provisioners`

Token formats are in ``docs/api.md`` and the docstrings of :mod:`.jwk` and :mod:`.holder`.
:func:`mint_holder_token` needs no database or server: clients import it from
:mod:`ostiary.provisioners.holder`.
"""

from typing import TYPE_CHECKING

from ostiary._lazy import lazy_exports

# The exports are loaded on first use (PEP 562), so that importing one light submodule (the
# client's ``holder``, ``oidc_binding``) does not pull in the store and SQLAlchemy.
_EXPORTS: dict[str, str] = {
    "LEAF_PROFILES": "base",
    "CAIdentity": "base",
    "Provisioner": "base",
    "ProvisionerClaims": "base",
    "Purpose": "base",
    "TokenGrant": "base",
    "combine_requested": "base",
    "parse_not_after": "base",
    "PROVISIONER_RECHECK_SECONDS": "cache",
    "ProvisionerCache": "cache",
    "HOLDER_TOKEN_TTL": "holder",
    "mint_holder_token": "holder",
    "JWK_TYPE": "jwk",
    "MAX_TOKEN_TTL": "jwk",
    "TOKEN_TTL": "jwk",
    "JWKProvisioner": "jwk",
    "OFFLINE": "manage",
    "ProvisionerInfo": "manage",
    "add_jwk_provisioner": "manage",
    "list_provisioners": "manage",
    "remove_provisioner": "manage",
    "normalize_name_pattern": "patterns",
    "renewal_authorization": "renewal",
    "authorize_sign": "tokens",
    "sign_token_spend": "tokens",
    "verify_sign_token": "tokens",
    "mint_admin_token": "tokens",
    "mint_sign_token": "tokens",
    "verify_admin_token": "tokens",
    "verify_holder_token": "tokens",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:
    from ostiary.provisioners.base import (
        LEAF_PROFILES,
        CAIdentity,
        Provisioner,
        ProvisionerClaims,
        Purpose,
        TokenGrant,
        combine_requested,
        parse_not_after,
    )
    from ostiary.provisioners.cache import PROVISIONER_RECHECK_SECONDS, ProvisionerCache
    from ostiary.provisioners.holder import HOLDER_TOKEN_TTL, mint_holder_token
    from ostiary.provisioners.jwk import JWK_TYPE, MAX_TOKEN_TTL, TOKEN_TTL, JWKProvisioner
    from ostiary.provisioners.manage import (
        OFFLINE,
        ProvisionerInfo,
        add_jwk_provisioner,
        list_provisioners,
        remove_provisioner,
    )
    from ostiary.provisioners.patterns import normalize_name_pattern
    from ostiary.provisioners.renewal import renewal_authorization
    from ostiary.provisioners.tokens import (
        authorize_sign,
        mint_admin_token,
        mint_sign_token,
        sign_token_spend,
        verify_admin_token,
        verify_holder_token,
        verify_sign_token,
    )

__all__ = [
    "HOLDER_TOKEN_TTL",
    "JWK_TYPE",
    "LEAF_PROFILES",
    "MAX_TOKEN_TTL",
    "OFFLINE",
    "PROVISIONER_RECHECK_SECONDS",
    "TOKEN_TTL",
    "CAIdentity",
    "JWKProvisioner",
    "Provisioner",
    "ProvisionerCache",
    "ProvisionerClaims",
    "ProvisionerInfo",
    "Purpose",
    "TokenGrant",
    "add_jwk_provisioner",
    "authorize_sign",
    "combine_requested",
    "list_provisioners",
    "mint_admin_token",
    "mint_holder_token",
    "mint_sign_token",
    "normalize_name_pattern",
    "parse_not_after",
    "remove_provisioner",
    "renewal_authorization",
    "sign_token_spend",
    "verify_admin_token",
    "verify_holder_token",
    "verify_sign_token",
]
