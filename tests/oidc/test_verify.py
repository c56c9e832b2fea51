"""The ``oidc`` provisioner against a real OpenID provider: accepted sign-ins and their twins.

ID tokens come from oidc-provider-mock (real RS256 signatures, real discovery and JWKS); the
CA side runs in-process on a fresh SQLite store, so each case takes milliseconds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID
from joserfc.jwk import RSAKey

from ostiary.authority.authority import Authority
from ostiary.client.enrollment import build_csr
from ostiary.core.errors import (
    NameNotAuthorized,
    OstiaryError,
    PolicyDenied,
    TokenReused,
    Unauthorized,
)
from ostiary.core.lifetime import Lifetime
from ostiary.core.names import format_general_name, parse_san, parse_subject, sans_of
from ostiary.provisioners import CAIdentity, ProvisionerClaims
from ostiary.provisioners.oidc import OIDCProvisioner, add_oidc_provisioner, authorize_oidc_sign
from ostiary.provisioners.oidc_binding import nonce_for_key
from ostiary.provisioners.oidc_discovery import REFETCH_INTERVAL, ProviderDirectory
from ostiary.store import UsedToken

from ..conftest import require_tool
from ..pkilint_helper import lint_certificate
from .conftest import CLIENT_ID, Provider

NAME = "corp"
CLAIMS = ProvisionerClaims(
    lifetime=Lifetime(timedelta(minutes=5), timedelta(days=7), timedelta(days=30))
)


def _now() -> datetime:
    return datetime.now(UTC)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _csr(
    key: ec.EllipticCurvePrivateKey, subject: str, *sans: str
) -> x509.CertificateSigningRequest:
    return build_csr(parse_subject(subject), [parse_san(s) for s in sans], key)


def _add(authority: Authority, provider: Provider, name: str = NAME, **options: Any) -> None:
    options.setdefault("domains", ("corp.example",))
    provisioner = OIDCProvisioner(
        name=name,
        configuration_endpoint=provider.configuration_endpoint,
        client_id=CLIENT_ID,
        claims=options.pop("claims", CLAIMS),
        **options,
    )
    add_oidc_provisioner(authority.store, provisioner, now=_now())


def _user(provider: Provider, sub: str, email: str, **claims: Any) -> None:
    """A user whose provider vouches for the e-mail and sends a ``upn`` (Entra's optional
    claim); ``claims`` may drop either (``None``) or add others."""
    values = {"email": email, "email_verified": True, "upn": email, **claims}
    provider.set_user(sub, **{k: v for k, v in values.items() if v is not None})


def _used_tokens(authority: Authority) -> int:
    with authority.store.transaction(read_only=True) as session:
        return session.query(UsedToken).count()


def _sign(
    authority: Authority,
    identity: CAIdentity,
    token: str,
    csr: x509.CertificateSigningRequest,
    name: str = NAME,
) -> x509.Certificate:
    authorization = authorize_oidc_sign(authority.store, name, token, csr, ca=identity, now=_now())
    return authority.issue(csr, authorization, actor="test")


def _names(certificate: x509.Certificate) -> list[str]:
    return [format_general_name(n) for n in sans_of(certificate.extensions)]


# --------------------------------------------------------------------------- accepted


def test_signed_in_user_gets_upn_and_email_certificate_that_openssl_and_pkilint_accept(
    authority: Authority, identity: CAIdentity, provider: Provider, tmp_path: Path
) -> None:
    _add(authority, provider)
    _user(provider, "alice", "alice@corp.example")
    key = _key()
    token = provider.id_token("alice", nonce=nonce_for_key(key.public_key()))

    certificate = _sign(authority, identity, token, _csr(key, "alice@corp.example"))

    assert _names(certificate) == ["upn:alice@corp.example", "email:alice@corp.example"]
    assert certificate.subject.rfc4514_string() == "CN=alice@corp.example"
    assert certificate.public_key() == key.public_key()
    extensions = certificate.extensions
    assert extensions.get_extension_for_oid(ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    cdp = extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert cdp[0].full_name == [x509.UniformResourceIdentifier("http://127.0.0.1:9/crl")]
    eku = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in eku
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert timedelta(days=7) <= lifetime <= timedelta(days=7, minutes=2)

    assert lint_certificate(certificate.public_bytes(serialization.Encoding.DER)) == []
    openssl = require_tool("openssl")
    pem = serialization.Encoding.PEM
    (tmp_path / "root.pem").write_bytes(authority.ca.root.public_bytes(pem))
    (tmp_path / "chain.pem").write_bytes(authority.ca.intermediate.public_bytes(pem))
    (tmp_path / "leaf.pem").write_bytes(certificate.public_bytes(pem))
    result = subprocess.run(
        [openssl, "verify", "-purpose", "sslclient", "-CAfile", "root.pem",
         "-untrusted", "chain.pem", "leaf.pem"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0 and "leaf.pem: OK" in result.stdout, result.stderr


def test_uri_san_from_sub_and_the_client_profile(
    authority: Authority, identity: CAIdentity, provider: Provider
) -> None:
    _add(authority, provider, uri_claim="sub", profile="client")
    _user(provider, "u-42", "dora@corp.example")
    key = _key()
    token = provider.id_token("u-42", nonce=nonce_for_key(key.public_key()))
    certificate = _sign(authority, identity, token, _csr(key, "dora@corp.example"))
    assert f"uri:{provider.issuer}/sub/u-42" in _names(certificate)


def test_admin_may_ask_for_another_name_within_the_patterns(
    authority: Authority, identity: CAIdentity, provider: Provider
) -> None:
    claims = ProvisionerClaims(
        lifetime=CLAIMS.lifetime, allowed_names=("email:*@corp.example", "upn:*@corp.example")
    )
    _add(authority, provider, admins=("root@corp.example",), claims=claims)
    _user(provider, "root", "root@corp.example")
    key = _key()
    token = provider.id_token("root", nonce=nonce_for_key(key.public_key()))
    csr = _csr(key, "carol@corp.example", "email:carol@corp.example", "upn:carol@corp.example")
    certificate = _sign(authority, identity, token, csr)
    assert sorted(_names(certificate)) == ["email:carol@corp.example", "upn:carol@corp.example"]


def test_admin_outside_the_patterns_is_refused(
    authority: Authority, identity: CAIdentity, provider: Provider
) -> None:
    claims = ProvisionerClaims(lifetime=CLAIMS.lifetime, allowed_names=("email:*@corp.example",))
    _add(authority, provider, admins=("root@corp.example",), claims=claims, domains=())
    _user(provider, "root2", "root@corp.example")
    key = _key()
    token = provider.id_token("root2", nonce=nonce_for_key(key.public_key()))
    with pytest.raises(NameNotAuthorized):
        _sign(authority, identity, token, _csr(key, "m@evil.example", "email:m@evil.example"))


def test_key_without_kid_hint_is_the_providers_only_key(provider: Provider) -> None:
    directory = ProviderDirectory()
    metadata = directory.metadata(provider.configuration_endpoint)
    assert directory.key_for(metadata, None).key_type == "RSA"


def test_unknown_kid_refetches_the_key_set_at_most_once_per_interval(provider: Provider) -> None:
    fetched: list[str] = []
    clock = [1000.0]

    class Counting(ProviderDirectory):
        def _get_json(self, url: str, *, ca_file: Path | None) -> dict[str, Any]:
            fetched.append(url)
            return super()._get_json(url, ca_file=ca_file)

    directory = Counting(clock=lambda: clock[0])
    metadata = directory.metadata(provider.configuration_endpoint)
    real_kid = directory.key_for(metadata, None).kid
    assert directory.key_for(metadata, real_kid).kid == real_kid
    assert len(fetched) == 2  # discovery + key set, then from cache
    with pytest.raises(Unauthorized, match="does not publish"):
        directory.key_for(metadata, "rotated-in")
    with pytest.raises(Unauthorized, match="does not publish"):
        directory.key_for(metadata, "rotated-in")
    assert len(fetched) == 2  # fetched under REFETCH_INTERVAL ago: not again
    clock[0] += REFETCH_INTERVAL
    with pytest.raises(Unauthorized):
        directory.key_for(metadata, "rotated-in")
    assert len(fetched) == 3


# --------------------------------------------------------------------------- refused


def _tamper_signature(token: str) -> str:
    head, body, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[10] ^= 0x01
    return f"{head}.{body}." + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


Case = Callable[[Provider, Provider, ec.EllipticCurvePrivateKey], tuple[str, str]]


def _good(p: Provider, _: Provider, key: ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    return p.id_token("alice", nonce=nonce_for_key(key.public_key())), "alice@corp.example"


REFUSED: list[Any] = [
    pytest.param(
        lambda p, o, k: (
            p.id_token("alice", nonce=nonce_for_key(k.public_key()), client_id="another-app"),
            "alice@corp.example",
        ),
        Unauthorized,
        "another audience",
        id="fail/wrong-audience",
    ),
    pytest.param(
        lambda p, o, k: (
            p.id_token("alice", nonce=nonce_for_key(k.public_key()), host="localhost"),
            "alice@corp.example",
        ),
        Unauthorized,
        "issuer does not match",
        id="fail/wrong-issuer",
    ),
    pytest.param(
        lambda p, o, k: (_tamper_signature(_good(p, o, k)[0]), "alice@corp.example"),
        Unauthorized,
        "signature does not verify",
        id="fail/bad-signature",
    ),
    pytest.param(
        lambda p, o, k: (
            o.id_token("alice", nonce=nonce_for_key(k.public_key())),
            "alice@corp.example",
        ),
        Unauthorized,
        "signature does not verify|does not publish",
        id="fail/other-providers-key",
    ),
    pytest.param(
        lambda p, o, k: (
            p.id_token("alice", nonce=nonce_for_key(_key().public_key())),
            "alice@corp.example",
        ),
        Unauthorized,
        "nonce does not match",
        id="fail/nonce-for-another-key",
    ),
    pytest.param(
        lambda p, o, k: (p.id_token("alice", nonce="plain-random-nonce"), "alice@corp.example"),
        Unauthorized,
        "no nonce made for",
        id="fail/nonce-not-ours",
    ),
    pytest.param(
        lambda p, o, k: (
            p.id_token("bob", nonce=nonce_for_key(k.public_key())),
            "bob@elsewhere.example",
        ),
        PolicyDenied,
        "outside the domains",
        id="fail/email-outside-domains",
    ),
    pytest.param(
        lambda p, o, k: (
            p.id_token("alice", nonce=nonce_for_key(k.public_key())),
            "carol@corp.example",
        ),
        NameNotAuthorized,
        "not authorized",
        id="fail/csr-asks-someone-elses-name",
    ),
    pytest.param(
        lambda p, o, k: (p.id_token("nomail", nonce=nonce_for_key(k.public_key())), "x"),
        Unauthorized,
        "no verified e-mail address and no UPN",
        id="fail/no-identity-claims",
    ),
]


@pytest.mark.parametrize(("case", "error", "message"), REFUSED)
def test_refused_id_tokens_spend_nothing(
    authority: Authority,
    identity: CAIdentity,
    provider: Provider,
    other_provider: Provider,
    case: Case,
    error: type[OstiaryError],
    message: str,
) -> None:
    _add(authority, provider)
    _user(provider, "alice", "alice@corp.example")
    _user(other_provider, "alice", "alice@corp.example")
    _user(provider, "bob", "bob@elsewhere.example")
    provider.set_user("nomail", name="No Mail")
    key = _key()
    token, subject = case(provider, other_provider, key)
    csr = _csr(key, subject, *([f"email:{subject}"] if "carol" in subject else []))
    with pytest.raises(error, match=message):
        _sign(authority, identity, token, csr)
    assert _used_tokens(authority) == 0


def test_expired_id_token_is_refused(
    authority: Authority, identity: CAIdentity, provider: Provider
) -> None:
    _add(authority, provider)
    _user(provider, "alice", "alice@corp.example")
    key = _key()
    token = provider.id_token("alice", nonce=nonce_for_key(key.public_key()))
    csr = _csr(key, "alice@corp.example")
    later = _now() + timedelta(hours=2)  # the provider's ID tokens live one hour
    with pytest.raises(Unauthorized, match="expired"):
        authorize_oidc_sign(authority.store, NAME, token, csr, ca=identity, now=later)


def test_missing_group_is_refused_and_member_is_accepted(
    authority: Authority, identity: CAIdentity, provider: Provider
) -> None:
    _add(authority, provider, groups=("pki-users",))
    _user(provider, "gina", "gina@corp.example", groups=["staff"])
    _user(provider, "hugo", "hugo@corp.example", groups=["staff", "pki-users"])
    key = _key()
    token = provider.id_token("gina", nonce=nonce_for_key(key.public_key()))
    with pytest.raises(PolicyDenied, match="none of the groups"):
        _sign(authority, identity, token, _csr(key, "gina@corp.example"))
    token = provider.id_token("hugo", nonce=nonce_for_key(key.public_key()))
    assert _sign(authority, identity, token, _csr(key, "hugo@corp.example"))


def test_tenant_mismatch_is_refused(
    authority: Authority, identity: CAIdentity, provider: Provider
) -> None:
    _add(authority, provider, tenant_id="tenant-a")
    _user(provider, "ivy", "ivy@corp.example", tid="tenant-b")
    key = _key()
    token = provider.id_token("ivy", nonce=nonce_for_key(key.public_key()))
    with pytest.raises(Unauthorized, match="another tenant"):
        _sign(authority, identity, token, _csr(key, "ivy@corp.example"))


def test_id_token_without_tid_is_said_to_have_none(
    authority: Authority, identity: CAIdentity, provider: Provider
) -> None:
    _add(authority, provider, tenant_id="tenant-a")
    _user(provider, "jim", "jim@corp.example")
    key = _key()
    token = provider.id_token("jim", nonce=nonce_for_key(key.public_key()))
    with pytest.raises(Unauthorized, match=r"has no tenant id \('tid'\)") as refused:
        _sign(authority, identity, token, _csr(key, "jim@corp.example"))
    assert "another tenant" not in str(refused.value)
    # Its twin: the right tid is accepted.
    _user(provider, "jim", "jim@corp.example", tid="tenant-a")
    token = provider.id_token("jim", nonce=nonce_for_key(key.public_key()))
    assert _sign(authority, identity, token, _csr(key, "jim@corp.example"))


def test_replayed_id_token_is_refused(
    authority: Authority, identity: CAIdentity, provider: Provider
) -> None:
    _add(authority, provider)
    _user(provider, "alice", "alice@corp.example")
    key = _key()
    token = provider.id_token("alice", nonce=nonce_for_key(key.public_key()))
    csr = _csr(key, "alice@corp.example")
    assert _sign(authority, identity, token, csr)
    with pytest.raises(TokenReused):
        _sign(authority, identity, token, csr)
    assert _used_tokens(authority) == 1


def test_unknown_or_non_oidc_provisioner_is_refused(
    authority: Authority, identity: CAIdentity, provider: Provider
) -> None:
    _user(provider, "alice", "alice@corp.example")
    key = _key()
    token = provider.id_token("alice", nonce=nonce_for_key(key.public_key()))
    with pytest.raises(Unauthorized, match="no OpenID Connect provisioner"):
        _sign(authority, identity, token, _csr(key, "alice@corp.example"), name="nobody")


# --------------------------------------------------------------------------- who is who


_ADMIN_CLAIMS = ProvisionerClaims(
    lifetime=CLAIMS.lifetime, allowed_names=("email:*@corp.example", "upn:*@corp.example")
)


def _ask_for_ceo(
    authority: Authority, identity: CAIdentity, provider: Provider, sub: str
) -> x509.Certificate:
    key = _key()
    token = provider.id_token(sub, nonce=nonce_for_key(key.public_key()))
    csr = _csr(key, "ceo@corp.example", "upn:ceo@corp.example")
    return _sign(authority, identity, token, csr)


def test_an_unverified_email_equal_to_an_admins_grants_no_admin_rights(
    authority: Authority, identity: CAIdentity, provider: Provider
) -> None:
    """Issue 22, finding 7: Entra sends no email_verified, and users can set ``email``."""
    _add(authority, provider, admins=("ceo@corp.example",), claims=_ADMIN_CLAIMS)
    provider.set_user(
        "mallory-1", email="ceo@corp.example", upn="mallory@corp.example"
    )  # no email_verified at all, as from Entra
    with pytest.raises(NameNotAuthorized):
        _ask_for_ceo(authority, identity, provider, "mallory-1")
    assert _used_tokens(authority) == 0


def test_an_email_verified_false_or_as_a_string_is_not_verified(
    authority: Authority, identity: CAIdentity, provider: Provider
) -> None:
    _add(authority, provider, admins=("ceo@corp.example",), claims=_ADMIN_CLAIMS)
    for sub, verified in (("mallory-2", False), ("mallory-3", "true")):
        _user(provider, sub, "ceo@corp.example", email_verified=verified, upn="m@corp.example")
        with pytest.raises(NameNotAuthorized):
            _ask_for_ceo(authority, identity, provider, sub)


def test_an_admin_matched_by_verified_email_may_ask_for_another_name(
    authority: Authority, identity: CAIdentity, provider: Provider
) -> None:
    _add(authority, provider, admins=("ceo@corp.example",), claims=_ADMIN_CLAIMS)
    _user(provider, "ceo-1", "ceo@corp.example", upn=None)
    certificate = _ask_for_ceo(authority, identity, provider, "ceo-1")
    assert _names(certificate) == ["upn:ceo@corp.example"]


def test_entra_xms_edov_verifies_the_email(
    authority: Authority, identity: CAIdentity, provider: Provider
) -> None:
    _add(authority, provider, admins=("ceo@corp.example",), claims=_ADMIN_CLAIMS)
    provider.set_user("ceo-2", email="ceo@corp.example", xms_edov=True)
    certificate = _ask_for_ceo(authority, identity, provider, "ceo-2")
    assert _names(certificate) == ["upn:ceo@corp.example"]


def test_an_admin_matched_by_sub_may_ask_for_another_name_whatever_the_email(
    authority: Authority, identity: CAIdentity, provider: Provider
) -> None:
    _add(authority, provider, admins=("sub:pki-officer-7",), claims=_ADMIN_CLAIMS)
    provider.set_user("pki-officer-7", email="someone@corp.example", upn="officer@corp.example")
    certificate = _ask_for_ceo(authority, identity, provider, "pki-officer-7")
    assert _names(certificate) == ["upn:ceo@corp.example"]
    # the twin: another sub with the same e-mail and UPN is no admin
    provider.set_user("pki-officer-8", email="someone@corp.example", upn="officer@corp.example")
    with pytest.raises(NameNotAuthorized):
        _ask_for_ceo(authority, identity, provider, "pki-officer-8")


def test_an_admin_matched_by_entra_oid(
    authority: Authority, identity: CAIdentity, provider: Provider
) -> None:
    oid = "6A1F2C7E-0000-4000-8000-00000000C0DE"
    _add(authority, provider, admins=(f"oid:{oid}",), claims=_ADMIN_CLAIMS)
    provider.set_user("entra-9", upn="officer@corp.example", oid=oid.lower())
    certificate = _ask_for_ceo(authority, identity, provider, "entra-9")
    assert _names(certificate) == ["upn:ceo@corp.example"]


def test_preferred_username_is_no_upn_unless_the_provisioner_says_so(
    authority: Authority, identity: CAIdentity, provider: Provider
) -> None:
    """Entra documents preferred_username as mutable: by default it names nobody."""
    _add(authority, provider)
    _add(authority, provider, name="corp-pu", upn_from_preferred_username=True)
    provider.set_user("pat", preferred_username="ceo@corp.example")
    key = _key()
    token = provider.id_token("pat", nonce=nonce_for_key(key.public_key()))
    with pytest.raises(Unauthorized, match="no verified e-mail address and no UPN"):
        _sign(authority, identity, token, _csr(key, "ceo@corp.example"))
    token = provider.id_token("pat", nonce=nonce_for_key(key.public_key()))
    certificate = _sign(authority, identity, token, _csr(key, "ceo@corp.example"), "corp-pu")
    assert _names(certificate) == ["upn:ceo@corp.example"]


@pytest.mark.parametrize(
    ("entry", "stored"),
    [
        pytest.param("sub:AbC-1", "sub:AbC-1", id="ok/sub-keeps-case"),
        pytest.param("OID:6A1F", "oid:6a1f", id="ok/oid"),
        pytest.param("Ceo@Corp.Example", "ceo@corp.example", id="ok/email"),
        pytest.param("email:ceo@corp.example", "ceo@corp.example", id="ok/email-prefix"),
        pytest.param("ceo", None, id="fail/bare-name"),
        pytest.param("upn:ceo@corp.example", None, id="fail/upn"),
    ],
)
def test_admin_entries_are_stored_in_one_form(entry: str, stored: str | None) -> None:
    from ostiary.core.errors import BadRequest
    from ostiary.provisioners.oidc_identity import normalize_admin

    if stored is None:
        with pytest.raises(BadRequest):
            normalize_admin(entry)
    else:
        assert normalize_admin(entry) == stored


# --------------------------------------------------------------------------- forged algorithms


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forged(token: str, alg: str, hmac_key: bytes | None) -> str:
    """``token``'s claims and header under ``alg``: no signature for ``none``, an HMAC
    with ``hmac_key`` for HS256 (what a verifier that lets the token pick the algorithm
    would check with the client secret, the client id or the provider's public key)."""
    head, body, _ = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    signing_input = f"{_b64(json.dumps({**header, 'alg': alg}).encode())}.{body}"
    if hmac_key is None:
        return f"{signing_input}."
    mac = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def _provider_public_pem(provider: Provider) -> bytes:
    jwks_uri = httpx.get(provider.configuration_endpoint).json()["jwks_uri"]
    (found,) = httpx.get(jwks_uri).json()["keys"]  # the provider's one key (no 'kid')
    return RSAKey.import_key(found).as_pem(private=False)


@pytest.mark.parametrize(
    "forgery",
    ["fail/alg-none", "fail/hs256-client-secret", "fail/hs256-client-id", "fail/hs256-public-key"],
)
def test_id_tokens_with_alg_none_or_hmac_are_refused(
    authority: Authority,
    identity: CAIdentity,
    provider: Provider,
    tmp_path: Path,
    forgery: str,
) -> None:
    """The provider's key type decides the algorithm, never the token: ``none`` and HS256 (keyed
    with what an attacker may know: the client id, the client secret of a leaked config, the
    published public key) are refused, and spend nothing; the genuine token is then taken."""
    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cret-of-the-app\n")
    secret_file.chmod(0o600)
    _add(authority, provider, client_secret_file=str(secret_file))
    _user(provider, "alice", "alice@corp.example")
    key = _key()
    genuine = provider.id_token("alice", nonce=nonce_for_key(key.public_key()))
    hmac_key = {
        "fail/alg-none": None,
        "fail/hs256-client-secret": b"s3cret-of-the-app",
        "fail/hs256-client-id": CLIENT_ID.encode(),
        "fail/hs256-public-key": _provider_public_pem(provider),
    }[forgery]
    token = _forged(genuine, "none" if hmac_key is None else "HS256", hmac_key)
    csr = _csr(key, "alice@corp.example")
    with pytest.raises(Unauthorized, match="algorithm we do not accept"):
        _sign(authority, identity, token, csr)
    assert _used_tokens(authority) == 0
    assert _sign(authority, identity, genuine, csr)  # the twin: the real signature passes
