"""External Account Binding (RFC 8555 section 7.3.4) and ACME Renewal Information (RFC 9773),
scripted with certbot's ``acme`` library against ``ostiary ca serve``.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import josepy as jose
import pytest
from acme import client, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from ostiary.store import AcmeAccount, Store
from tests.acme.conftest import AcmeServer, Responder
from tests.acme.test_acme_library import answer_http01, csr_pem, issue, make_client, registered

pytestmark = pytest.mark.slow


class ReplacingOrder(messages.NewOrder):
    """newOrder with RFC 9773 ``replaces`` (acme 5.9's ``new_order`` cannot send it)."""

    replaces: str = jose.field("replaces", omitempty=True)


def new_order_replacing(
    acme: client.ClientV2, pem: bytes, names: list[str], cert_id: str
) -> messages.OrderResource:
    identifiers = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=n) for n in names]
    answer = acme._post(
        acme.directory["newOrder"], ReplacingOrder(identifiers=identifiers, replaces=cert_id)
    )
    body = messages.Order.from_json(answer.json())
    authorizations = [
        acme._authzr_from_response(acme._post_as_get(url), uri=url) for url in body.authorizations
    ]
    return messages.OrderResource(
        body=body, uri=answer.headers["Location"], authorizations=authorizations, csr_pem=pem
    )


def unchecked_post(acme: client.ClientV2, url: str, obj: jose.JSONDeSerializable) -> Any:
    """A signed POST whose error answer is returned, not raised: the library turns a 409
    into a ConflictError that drops the problem's type.
    """
    net = acme.net
    nonce = net._get_nonce(url, acme.directory["newNonce"])
    return net._send_request(
        "POST",
        url,
        data=net._wrap_in_jws(obj, nonce, url),
        headers={"Content-Type": "application/jose+json"},
    )


def cert_id(certificate: x509.Certificate) -> str:
    """RFC 9773 section 4.1, written out here rather than taken from the server."""
    aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    serial = certificate.serial_number
    octets = serial.to_bytes((serial.bit_length() + 8) // 8, "big")

    def b64(data: bytes | None) -> str:
        return base64.urlsafe_b64encode(data or b"").rstrip(b"=").decode("ascii")

    return f"{b64(aki.key_identifier)}.{b64(octets)}"


def eab_registration(
    acme: client.ClientV2, key: ec.EllipticCurvePrivateKey, kid: str, hmac_key: str
) -> messages.NewRegistration:
    binding = messages.ExternalAccountBinding.from_data(
        account_public_key=jose.JWKEC(key=key).public_key(),
        kid=kid,
        hmac_key=hmac_key,
        directory=acme.directory,
    )
    return messages.NewRegistration.from_data(
        terms_of_service_agreed=True, external_account_binding=binding
    )


def problem(raised: pytest.ExceptionInfo[errors.Error]) -> str:
    return str(raised.value.typ).removeprefix("urn:ietf:params:acme:error:")  # type: ignore[attr-defined]


def account_count(server: AcmeServer) -> int:
    store = Store.from_url(server.folder.database_url)
    try:
        with store.transaction(read_only=True) as session:
            return int(session.scalar(select(func.count()).select_from(AcmeAccount)) or 0)
    finally:
        store.dispose()


def test_an_eab_key_binds_one_account_once_and_narrows_its_names(
    acme_server: AcmeServer, responder: Responder
) -> None:
    with acme_server.client() as http:
        required_meta = http.get(acme_server.directory("eab")).json()["meta"]
        open_meta = http.get(acme_server.directory()).json()["meta"]
    assert required_meta["externalAccountRequired"] is True
    assert open_meta["externalAccountRequired"] is False
    key = ec.generate_private_key(ec.SECP256R1())
    acme = make_client(acme_server, key, "eab")
    with pytest.raises(errors.Error) as required:
        acme.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True))
    assert problem(required) == "externalAccountRequired"

    made = acme_server.eab_key(names=("localhost",))
    # A MAC made with another key under the right kid is refused, and binds nothing.
    wrong = base64.urlsafe_b64encode(b"\x01" * 32).rstrip(b"=").decode()
    with pytest.raises(errors.Error) as forged:
        acme.new_account(eab_registration(acme, key, made.kid, wrong))
    assert problem(forged) == "unauthorized"

    before = account_count(acme_server)
    account = acme.new_account(eab_registration(acme, key, made.kid, made.hmac_key))
    assert account.body.status == "valid"
    # The key is spent: a second account cannot bind it, and nothing is made.
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = make_client(acme_server, other_key, "eab")
    with pytest.raises(errors.Error) as twice:
        other.new_account(eab_registration(other, other_key, made.kid, made.hmac_key))
    assert problem(twice) == "unauthorized"
    assert "bound" in str(twice.value)
    assert account_count(acme_server) == before + 1

    # The key allowed "localhost" only: "vm" is refused at newOrder, "localhost" issues.
    with pytest.raises(errors.Error) as outside:
        acme.new_order(csr_pem(["vm"])[0])
    assert problem(outside) == "rejectedIdentifier"
    certificate, _ = issue(acme, ["localhost"], responder)
    sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]


def renew_early(server: AcmeServer, *options: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from ostiary.cli.main import main; main()",
         "ca", "acme", "renew-early", *options,
         "--dir", str(server.folder.paths.root)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_renewal_info_window_renew_early_and_replaces(
    acme_server: AcmeServer, responder: Responder
) -> None:
    acme, _, _ = registered(acme_server)
    old, _ = issue(acme, ["localhost"], responder)
    pem = old.public_bytes(serialization.Encoding.PEM)
    lifetime = old.not_valid_after_utc - old.not_valid_before_utc
    # The default window: from two thirds to five sixths of the lifetime.
    suggested, _ = acme.renewal_time(pem)
    assert suggested is not None
    assert old.not_valid_before_utc + lifetime * 2 / 3 - timedelta(seconds=1) <= suggested
    assert suggested <= old.not_valid_before_utc + lifetime * 5 / 6 + timedelta(seconds=1)

    renew_early(acme_server, "--serial", f"{old.serial_number:x}")
    suggested, _ = acme.renewal_time(pem)
    assert suggested is not None
    assert suggested <= datetime.now(UTC) + timedelta(minutes=2)

    # Another account may not replace it; an unknown certID has no renewal info.
    stranger, _, _ = registered(acme_server)
    with pytest.raises(errors.Error) as foreign:
        new_order_replacing(stranger, csr_pem(["localhost"])[0], ["localhost"], cert_id(old))
    assert problem(foreign) == "unauthorized"
    with acme_server.client() as http:
        base = http.get(acme_server.directory()).json()["renewalInfo"]
        unknown = http.get(f"{base}/{cert_id(old).split('.')[0]}.AQID")
        garbage = http.get(f"{base}/not-a-cert-id")
    assert unknown.status_code == 404
    assert garbage.status_code == 400

    # The owner replaces it: the new certificate's lineage names the old one.
    new_pem, _ = csr_pem(["localhost"])
    order = new_order_replacing(acme, new_pem, ["localhost"], cert_id(old))
    assert acme._post_as_get(order.uri).json()["replaces"] == cert_id(old)
    answer_http01(acme, order, responder)
    done = acme.poll_and_finalize(order, datetime.now() + timedelta(seconds=30))
    new = x509.load_pem_x509_certificates(done.fullchain_pem.encode())[0]
    assert acme_server.renewed_from(new) == f"{old.serial_number:x}"
    # A second replacement of the same certificate is refused.
    identifiers = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value="localhost")]
    again = unchecked_post(
        acme,
        acme.directory["newOrder"],
        ReplacingOrder(identifiers=identifiers, replaces=cert_id(old)),
    )
    assert again.status_code == 409
    assert again.json()["type"] == "urn:ietf:params:acme:error:alreadyReplaced"


def test_no_eab_key_starts_with_a_dash(
    acme_server: AcmeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by CI: a key printed as ``-lQc...`` made ``certbot --eab-hmac-key KEY`` fail
    ("expected one argument"). Such a draw is made again; the key printed is the one sealed."""
    from ostiary.provisioners import acme_eab

    draws = iter([b"\xf8" + b"\x00" * 31, b"\x01" * 32])  # base64url "-AAA...", then "AQEB..."
    real = acme_eab.secrets.token_bytes
    monkeypatch.setattr(
        acme_eab.secrets, "token_bytes", lambda n: next(draws) if n == 32 else real(n)
    )
    made = acme_server.eab_key()
    assert made.hmac_key == base64.urlsafe_b64encode(b"\x01" * 32).rstrip(b"=").decode()
