"""One-time sign tokens of ``jwk`` provisioners: what they authorize, and every refusal."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from ostiary.authority.authority import Authority
from ostiary.core.errors import (
    BadRequest,
    LifetimeNotAllowed,
    NameNotAuthorized,
    OstiaryError,
    PolicyDenied,
    TokenReused,
    Unauthorized,
)
from ostiary.core.issuance import Authorization
from ostiary.core.lifetime import Lifetime
from ostiary.core.names import format_general_name, sans_of
from ostiary.provisioners import (
    CAIdentity,
    ProvisionerClaims,
    authorize_sign,
    mint_sign_token,
)
from ostiary.store import AuditEntry, AuditLog

from .conftest import PASSWORD, Kit, b64url, compact, make_csr

OTHER_CA = CAIdentity(root_fingerprint="cd" * 32)


def authorize(
    kit: Kit, token: str, csr: x509.CertificateSigningRequest | None = None
) -> Authorization:
    return authorize_sign(
        kit.store, token, csr or make_csr("host.lab.example"), ca=kit.identity, now=kit.now
    )


def audit_events(kit: Kit) -> list[str]:
    with kit.store.transaction(read_only=True) as session:
        return list(session.scalars(select(AuditEntry.event).order_by(AuditEntry.id)))


# --------------------------------------------------------------------------- accepted


def test_a_minted_token_authorizes_exactly_its_names(kit: Kit) -> None:
    token = mint_sign_token(
        kit.store,
        "ci",
        "host.lab.example",
        ca=kit.identity,
        password=PASSWORD,
        now=kit.now,
        sans=("host.lab.example", "api.lab.example"),
    )
    authorization = authorize(kit, token)

    assert [format_general_name(n) for n in authorization.names] == [
        "dns:host.lab.example",
        "dns:api.lab.example",
    ]
    assert authorization.subject.rfc4514_string() == "CN=host.lab.example"
    assert authorization.provisioner == "ci"
    assert authorization.profile == "client"
    assert authorization.lifetime == kit.provisioner.claims.lifetime
    assert audit_events(kit)[-2:] == ["token.minted", "token.used"]


def test_the_token_is_printed_nowhere_in_the_audit_log(kit: Kit) -> None:
    token = mint_sign_token(
        kit.store, "ci", "host.lab.example", ca=kit.identity, password=PASSWORD, now=kit.now
    )
    authorize(kit, token)
    with kit.store.transaction(read_only=True) as session:
        entries = list(session.scalars(select(AuditEntry)))
    signature = token.rsplit(".", 1)[1]
    assert all(signature not in str(e.details) for e in entries)
    assert all(kit.provisioner.encrypted_key not in str(e.details) for e in entries)


def test_a_token_issues_through_the_authority(kit: Kit) -> None:
    token = kit.token(kit.claims(sans=["dns:host.lab.example", "dns:www.lab.example"]))
    csr = make_csr("host.lab.example", ("host.lab.example",))
    authorization = authorize_sign(kit.store, token, csr, ca=kit.identity, now=kit.now)

    certificate = kit.authority.issue(csr, authorization, actor="provisioner:ci")

    assert [format_general_name(n) for n in sans_of(certificate.extensions)] == [
        "dns:host.lab.example",
        "dns:www.lab.example",
    ]
    assert certificate.not_valid_after_utc == kit.now + timedelta(hours=24)


def test_leeway_accepts_a_token_just_expired(kit: Kit) -> None:
    issued = int(kit.now.timestamp())
    authorize(kit, kit.token(kit.claims(iat=issued - 320, nbf=issued - 320, exp=issued - 20)))


def test_leeway_accepts_a_token_from_a_clock_just_ahead(kit: Kit) -> None:
    issued = int(kit.now.timestamp()) + 20
    authorize(kit, kit.token(kit.claims(iat=issued, nbf=issued, exp=issued + 300)))


def test_a_token_of_an_hour_is_the_longest_accepted(kit: Kit) -> None:
    issued = int(kit.now.timestamp())
    authorize(kit, kit.token(kit.claims(exp=issued + 3600)))


# --------------------------------------------------------------------------- refused

TokenMaker = Callable[[Kit], str]


def _times(kit: Kit, *, start: int, length: int) -> dict[str, int]:
    issued = int(kit.now.timestamp()) + start
    return {"iat": issued, "nbf": issued, "exp": issued + length}


def _forged_with_other_key(kit: Kit) -> str:
    return kit.token(key=ec.generate_private_key(ec.SECP256R1()))


def _alg_none(kit: Kit) -> str:
    return compact(kit.header(alg="none"), kit.claims())


def _hs256_with_public_key(kit: Kit) -> str:
    header, claims = kit.header(alg="HS256"), kit.claims()
    unsigned = compact(header, claims).rsplit(".", 1)[0]
    public_pem = kit.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signature = hmac.new(public_pem, unsigned.encode(), hashlib.sha256).digest()
    return f"{unsigned}.{b64url(signature)}"


def _es384_with_p384_key(kit: Kit) -> str:
    return kit.token(header=kit.header(alg="ES384"), key=ec.generate_private_key(ec.SECP384R1()))


def _tampered_payload(kit: Kit) -> str:
    token = kit.token()
    header, _, signature = token.split(".")
    payload = compact({}, kit.claims(sans=["dns:evil.lab.example"])).split(".")[1]
    return f"{header}.{payload}.{signature}"


def _other_provisioner_name(kit: Kit) -> str:
    kit.add_provisioner("other")
    return kit.token(kit.claims(iss="other"))


REFUSED: list[object] = [
    pytest.param(
        lambda k: k.token(k.claims(**_times(k, start=-600, length=300))), id="fail/expired"
    ),
    pytest.param(
        lambda k: k.token(k.claims(**_times(k, start=-331, length=300))),
        id="fail/expired-past-leeway",
    ),
    pytest.param(
        lambda k: k.token(k.claims(nbf=int(k.now.timestamp()) + 120)), id="fail/not-yet-valid"
    ),
    pytest.param(
        lambda k: k.token(k.claims(**_times(k, start=120, length=300))),
        id="fail/issued-in-the-future",
    ),
    pytest.param(
        lambda k: k.token(k.claims(aud=OTHER_CA.audience("sign"))), id="fail/other-ca-audience"
    ),
    pytest.param(
        lambda k: k.token(k.claims(aud=k.identity.audience("renew"))), id="fail/renew-audience"
    ),
    pytest.param(
        lambda k: k.token(k.claims(aud=k.identity.audience("admin"))), id="fail/admin-audience"
    ),
    pytest.param(lambda k: k.token(k.claims(aud=None)), id="fail/no-audience"),
    pytest.param(lambda k: k.token(k.claims(iss="nobody")), id="fail/unknown-provisioner"),
    pytest.param(lambda k: k.token(k.claims(iss=None)), id="fail/no-issuer"),
    pytest.param(lambda k: k.token(k.claims(iss="../x\n")), id="fail/garbage-issuer"),
    pytest.param(_other_provisioner_name, id="fail/issuer-of-another-provisioner"),
    pytest.param(lambda k: k.token(header=k.header(kid="not-the-kid")), id="fail/wrong-kid"),
    pytest.param(lambda k: k.token(header=k.header(kid=None)), id="fail/no-kid"),
    pytest.param(_forged_with_other_key, id="fail/forged-signature"),
    pytest.param(_tampered_payload, id="fail/tampered-payload"),
    pytest.param(_alg_none, id="fail/alg-none"),
    pytest.param(_hs256_with_public_key, id="fail/hs256-public-key-as-secret"),
    pytest.param(_es384_with_p384_key, id="fail/es384"),
    pytest.param(
        lambda k: k.token(header=k.header(jku="https://evil.example/keys")), id="fail/jku-header"
    ),
    pytest.param(
        lambda k: k.token(k.claims(exp=int(k.now.timestamp()) + 3601)),
        id="fail/token-lifetime-over-an-hour",
    ),
    pytest.param(
        lambda k: k.token(k.claims(**_times(k, start=-3000, length=7200))),
        id="fail/long-lived-token-inside-its-window",
    ),
    pytest.param(lambda k: k.token(k.claims(exp=None)), id="fail/no-exp"),
    pytest.param(lambda k: k.token(k.claims(iat=None)), id="fail/no-iat"),
    pytest.param(lambda k: k.token(k.claims(exp="tomorrow")), id="fail/exp-not-a-number"),
    pytest.param(lambda k: k.token(k.claims(jti=None)), id="fail/no-jti"),
    pytest.param(lambda k: k.token(k.claims(jti="short")), id="fail/short-jti"),
    pytest.param(lambda k: k.token(k.claims(sub=None)), id="fail/no-subject"),
    pytest.param(
        lambda k: k.token(k.claims(sans="dns:host.lab.example")), id="fail/sans-not-a-list"
    ),
    pytest.param(lambda k: "garbage", id="fail/garbage"),
    pytest.param(lambda k: "", id="fail/empty"),
    pytest.param(lambda k: "a.b.c", id="fail/three-garbage-parts"),
    pytest.param(lambda k: k.token() + ".x", id="fail/four-parts"),
    pytest.param(lambda k: "e" * 20_000, id="fail/huge"),
    pytest.param(lambda k: compact({"alg": "ES256"}, [1, 2]), id="fail/claims-not-an-object"),
]


@pytest.mark.parametrize("make_token", REFUSED)
def test_bad_tokens_are_unauthorized(kit: Kit, make_token: TokenMaker) -> None:
    token = make_token(kit)
    with pytest.raises(Unauthorized) as refused:
        authorize(kit, token)
    assert token[:40] not in str(refused.value) or not token
    assert "token.used" not in audit_events(kit)


def test_refusal_messages_name_the_broken_rule(kit: Kit) -> None:
    cases = {
        "has expired": kit.token(kit.claims(**_times(kit, start=-600, length=300))),
        "another audience": kit.token(kit.claims(aud=OTHER_CA.audience("sign"))),
        "unknown provisioner": kit.token(kit.claims(iss="nobody")),
        "signature does not verify": _forged_with_other_key(kit),
        "algorithm we do not accept": _alg_none(kit),
        "longer than": kit.token(kit.claims(exp=int(kit.now.timestamp()) + 7200)),
        "not valid yet": kit.token(kit.claims(nbf=int(kit.now.timestamp()) + 120)),
    }
    for expected, token in cases.items():
        with pytest.raises(Unauthorized, match=expected):
            authorize(kit, token)


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("subject", "sans", "allowed"),
    [
        pytest.param("host.lab.example", ["dns:host.lab.example"], True, id="ok/inside"),
        pytest.param("host.lab.example", ["dns:evil.example"], False, id="fail/san-outside"),
        pytest.param("evil.example", ["dns:host.lab.example"], False, id="fail/cn-outside"),
        pytest.param("host.lab.example", ["email:host@lab.example"], False, id="fail/other-kind"),
    ],
)
def test_token_names_must_fit_the_provisioner_patterns(
    kit: Kit, subject: str, sans: list[str], allowed: bool
) -> None:
    token = kit.token(kit.claims(sub=subject, sans=sans))
    csr = make_csr(subject)
    if allowed:
        authorize(kit, token, csr)
    else:
        with pytest.raises(NameNotAuthorized):
            authorize(kit, token, csr)


def test_minting_refuses_names_outside_the_patterns(kit: Kit) -> None:
    with pytest.raises(NameNotAuthorized):
        mint_sign_token(
            kit.store,
            "ci",
            "host.lab.example",
            ca=kit.identity,
            password=PASSWORD,
            now=kit.now,
            sans=("evil.example",),
        )
    assert "token.minted" not in audit_events(kit)


def test_a_csr_asking_for_other_names_is_refused_and_the_token_kept(kit: Kit) -> None:
    token = kit.token()
    with pytest.raises(NameNotAuthorized):
        authorize(kit, token, make_csr("host.lab.example", ("other.lab.example",)))
    authorize(kit, token, make_csr("host.lab.example", ("host.lab.example",)))


def test_the_authority_refuses_a_csr_with_names_outside_the_token(kit: Kit) -> None:
    authorization = authorize(kit, kit.token())
    with pytest.raises(NameNotAuthorized):
        kit.authority.issue(
            make_csr("host.lab.example", ("evil.example",)),
            authorization,
            actor="provisioner:ci",
        )
    assert audit_events(kit)[-1] == "certificate.denied"


# --------------------------------------------------------------------------- single use


def test_a_token_is_accepted_once(kit: Kit) -> None:
    token = kit.token()
    authorize(kit, token)
    with pytest.raises(TokenReused):
        authorize(kit, token)
    assert audit_events(kit)[-2:] == ["token.used", "token.reused"]


def test_a_token_is_accepted_once_across_replicas(
    replicas: tuple[Kit, Authority],
) -> None:
    kit, other = replicas
    token = kit.token(kit.claims(sans=["dns:host.lab.example"]))
    authorize(kit, token)
    with pytest.raises(TokenReused):
        authorize_sign(other.store, token, make_csr(), ca=kit.identity, now=kit.now)


def test_the_same_jti_from_two_provisioners_is_two_tokens(kit: Kit) -> None:
    second = kit.add_provisioner("second")
    claims = kit.claims()
    authorize(kit, kit.token(claims))
    other_claims = {**claims, "iss": "second"}
    token = kit.token(
        other_claims, header=kit.header(kid=second.kid), key=second.load_private_key(PASSWORD)
    )
    authorize(kit, token)


# --------------------------------------------------------------------------- lifetime


def test_the_token_not_after_is_the_requested_lifetime(kit: Kit) -> None:
    authorization = authorize(kit, kit.token(kit.claims(not_after="2h")))
    assert authorization.requested == timedelta(hours=2)


@pytest.mark.parametrize(
    ("token_not_after", "requested", "result"),
    [
        pytest.param("2h", timedelta(hours=1), timedelta(hours=1), id="ok/request-shorter"),
        pytest.param(None, timedelta(hours=3), timedelta(hours=3), id="ok/request-alone"),
        pytest.param("2h", timedelta(hours=3), None, id="fail/request-longer"),
        pytest.param("40d", None, None, id="fail/token-past-provisioner-max"),
        pytest.param(None, timedelta(days=40), None, id="fail/request-past-provisioner-max"),
    ],
)
def test_the_request_not_after_meets_the_token_not_after(
    kit: Kit, token_not_after: str | None, requested: timedelta | None, result: timedelta | None
) -> None:
    token = kit.token(kit.claims(not_after=token_not_after))
    call = lambda: authorize_sign(  # noqa: E731
        kit.store, token, make_csr(), ca=kit.identity, now=kit.now, requested_not_after=requested
    )
    if result is None:
        with pytest.raises(LifetimeNotAllowed):
            call()
    else:
        assert call().requested == result


def test_a_refused_lifetime_does_not_spend_the_token(kit: Kit) -> None:
    token = kit.token()
    with pytest.raises(LifetimeNotAllowed):
        authorize_sign(
            kit.store,
            token,
            make_csr(),
            ca=kit.identity,
            now=kit.now,
            requested_not_after=timedelta(days=365),
        )
    authorize(kit, token)


# --------------------------------------------------------------------------- profiles


@pytest.mark.parametrize(
    ("profiles", "asked", "allowed"),
    [
        pytest.param(("device", "client"), None, "device", id="ok/first-is-default"),
        pytest.param(("device", "client"), "client", "client", id="ok/listed"),
        pytest.param(("device",), "client", None, id="fail/not-listed"),
        pytest.param(("client",), "ocsp", None, id="fail/ocsp-never"),
        pytest.param(("client",), "nonsense", None, id="fail/unknown-profile"),
    ],
)
def test_tokens_may_ask_only_for_the_provisioner_profiles(
    kit: Kit, profiles: tuple[str, ...], asked: str | None, allowed: str | None
) -> None:
    provisioner = kit.add_provisioner("devices", profiles=profiles)
    claims = kit.claims(iss="devices", sub="dev1", sans=["uri:urn:dev:1"], profile=asked)
    claims = {k: v for k, v in claims.items() if k != "profile" or asked is not None}
    token = kit.token(
        claims, header=kit.header(kid=provisioner.kid), key=provisioner.load_private_key(PASSWORD)
    )
    if allowed is None:
        with pytest.raises((PolicyDenied, BadRequest)):
            authorize(kit, token, make_csr("dev1"))
    else:
        assert authorize(kit, token, make_csr("dev1")).profile == allowed


def test_provisioner_claims_are_the_certificate_lifetime(kit: Kit) -> None:
    short = kit.add_provisioner(
        "short",
        claims=ProvisionerClaims(
            lifetime=Lifetime(timedelta(minutes=5), timedelta(hours=1), timedelta(hours=2))
        ),
    )
    token = short.mint_sign_token(
        short.load_private_key(PASSWORD), "host.lab.example", ca=kit.identity, now=kit.now
    )
    csr = make_csr()
    authorization = authorize_sign(kit.store, token, csr, ca=kit.identity, now=kit.now)
    certificate = kit.authority.issue(csr, authorization, actor="provisioner:short")
    assert certificate.not_valid_after_utc == kit.now + timedelta(hours=1)


def test_errors_are_ostiary_errors_only(kit: Kit) -> None:
    for garbage in ("\x00", "é.é.é", "..", "a..b", "eyJ.eyJ.eyJ"):
        with pytest.raises(OstiaryError):
            authorize(kit, garbage)


def test_audit_chain_stays_sound(kit: Kit) -> None:
    token = kit.token()
    authorize(kit, token)
    with pytest.raises(TokenReused):
        authorize(kit, token)
    with kit.store.transaction(read_only=True) as session:
        assert AuditLog(session).verify().ok
