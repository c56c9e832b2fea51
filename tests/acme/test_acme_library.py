"""certbot's ``acme`` library (PyPI) scripted against ``ostiary ca serve``: the whole protocol.

Each accepted case here has its rejected twins in ``test_rejections.py``.
"""

from __future__ import annotations

import ipaddress
import json
from datetime import datetime, timedelta

import josepy as jose
import pytest
from acme import challenges, client, errors, messages
from acme import jws as acme_jws
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.acme.conftest import AcmeServer, Responder
from tests.pkilint_helper import lint_certificate

pytestmark = pytest.mark.slow


def make_client(
    server: AcmeServer, key: ec.EllipticCurvePrivateKey, provisioner: str = "acme"
) -> client.ClientV2:
    net = client.ClientNetwork(
        jose.JWKEC(key=key),
        alg=jose.ES256,
        verify_ssl=str(server.root_file),
        user_agent="ostiary-tests",
    )
    directory = client.ClientV2.get_directory(server.directory(provisioner), net)
    return client.ClientV2(directory, net)


def registered(
    server: AcmeServer, provisioner: str = "acme"
) -> tuple[client.ClientV2, messages.RegistrationResource, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    acme = make_client(server, key, provisioner)
    account = acme.new_account(
        messages.NewRegistration.from_data(email="ops@example.com", terms_of_service_agreed=True)
    )
    return acme, account, key


def existing_account(acme: client.ClientV2) -> str:
    """The URL of the account of this client's key (the library raises on "it exists")."""
    with pytest.raises(errors.ConflictError) as found:
        acme.new_account(messages.NewRegistration(only_return_existing=True))
    return str(found.value.location)


def csr_pem(names: list[str]) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    """A CSR for DNS names and IP addresses (``127.0.0.1``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM), key


def answer_http01(
    acme: client.ClientV2, order: messages.OrderResource, responder: Responder
) -> None:
    for authz in order.authorizations:
        for challenge in authz.body.challenges:
            if isinstance(challenge.chall, challenges.HTTP01):
                response, validation = challenge.response_and_validation(acme.net.key)
                responder.answers[challenge.chall.encode("token")] = validation
                acme.answer_challenge(challenge, response)


def issue(
    acme: client.ClientV2, names: list[str], responder: Responder, profile: str | None = None
) -> tuple[x509.Certificate, messages.OrderResource]:
    pem, _ = csr_pem(names)
    order = acme.new_order(pem, profile=profile) if profile else acme.new_order(pem)
    answer_http01(acme, order, responder)
    done = acme.poll_and_finalize(order, datetime.now() + timedelta(seconds=30))
    leaf = x509.load_pem_x509_certificates(done.fullchain_pem.encode())[0]
    return leaf, done


def eku_of(certificate: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_directory_names_the_profiles(acme_server: AcmeServer) -> None:
    with acme_server.client() as http:
        directory = http.get(acme_server.directory()).json()
        assert set(directory["meta"]["profiles"]) == {"server", "client"}
        assert directory["keyChange"].endswith("/acme/acme/key-change")
        unknown = http.get(acme_server.directory("no-such"))
    assert unknown.status_code == 404
    assert unknown.json()["type"] == "urn:ietf:params:acme:error:malformed"


def test_server_certificate_by_default_and_client_certificate_by_profile_name(
    acme_server: AcmeServer, responder: Responder
) -> None:
    acme, _, _ = registered(acme_server)
    server_cert, order = issue(acme, ["127.0.0.1"], responder)
    assert eku_of(server_cert) == {ExtendedKeyUsageOID.SERVER_AUTH}
    assert order.body.profile == "server"  # type: ignore[attr-defined]
    client_cert, order = issue(acme, ["127.0.0.1"], responder, profile="client")
    assert eku_of(client_cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    sans = client_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    dns_cert, _ = issue(acme, ["vm"], responder, profile="client")
    assert dns_cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName) == ["vm"]
    # pkilint on both profiles (single-label names like "vm" are not domain names to it).
    for certificate in (server_cert, client_cert):
        assert lint_certificate(certificate.public_bytes(serialization.Encoding.DER)) == []


def test_unknown_profile_is_refused(acme_server: AcmeServer) -> None:
    acme, _, _ = registered(acme_server)
    pem, _ = csr_pem(["localhost"])
    with pytest.raises(errors.Error) as refused:
        acme.new_order(pem, profile="tlsclient")
    assert refused.value.typ == "urn:ietf:params:acme:error:invalidProfile"  # type: ignore[attr-defined]


def test_account_lookup_update_and_deactivation(acme_server: AcmeServer) -> None:
    acme, account, key = registered(acme_server)
    assert existing_account(make_client(acme_server, key)) == account.uri
    updated = acme.update_registration(
        account, messages.UpdateRegistration(contact=("mailto:new@example.com",))
    )
    assert updated.body.contact == ("mailto:new@example.com",)
    acme.deactivate_registration(updated)
    with pytest.raises(errors.Error) as refused:
        acme.query_registration(updated)
    assert refused.value.typ == "urn:ietf:params:acme:error:unauthorized"  # type: ignore[attr-defined]
    stranger = make_client(acme_server, ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(errors.Error) as missing:
        stranger.new_account(messages.NewRegistration(only_return_existing=True))
    assert missing.value.typ == "urn:ietf:params:acme:error:accountDoesNotExist"  # type: ignore[attr-defined]


def test_key_change_moves_the_account_to_the_new_key(
    acme_server: AcmeServer, responder: Responder
) -> None:
    acme, account, old_key = registered(acme_server)
    new_key = ec.generate_private_key(ec.SECP256R1())
    new_jwk = jose.JWKEC(key=new_key)
    url = acme.directory["keyChange"]
    inner = acme_jws.JWS.sign(
        json.dumps(
            {
                "account": account.uri,
                "oldKey": jose.JWKEC(key=old_key).public_key().to_partial_json(),
            }
        ).encode(),
        key=new_jwk,
        alg=jose.ES256,
        nonce=None,
        url=url,
    )
    acme.net.account = account
    answer = acme.net.post(url, inner)
    assert answer.status_code == 200
    # The old key no longer finds the account; the new one does, and can order.
    with pytest.raises(errors.Error):
        make_client(acme_server, old_key).new_account(
            messages.NewRegistration(only_return_existing=True)
        )
    renewed = make_client(acme_server, new_key)
    assert existing_account(renewed) == account.uri
    # Nor does it sign for the account any more (the server's parsed key is the new one).
    with pytest.raises(errors.Error):
        acme.new_order(csr_pem(["localhost"])[0])
    renewed.net.account = account
    certificate, _ = issue(renewed, ["runsc"], responder)
    assert certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_authorization_deactivation_makes_the_order_invalid(acme_server: AcmeServer) -> None:
    acme, _, _ = registered(acme_server)
    pem, _ = csr_pem(["localhost"])
    order = acme.new_order(pem)
    authz = order.authorizations[0]
    deactivated = acme.deactivate_authorization(authz)
    assert deactivated.body.status == messages.STATUS_DEACTIVATED
    refreshed = acme.net.post(order.uri, None)
    assert refreshed.json()["status"] == "invalid"


def test_revocation_by_account_and_by_certificate_key(
    acme_server: AcmeServer, responder: Responder
) -> None:
    acme, _, _ = registered(acme_server)
    first, _ = issue(acme, ["localhost"], responder)
    acme.revoke(first, 1)
    with pytest.raises(errors.Error) as again:
        acme.revoke(first, 1)
    assert again.value.typ == "urn:ietf:params:acme:error:alreadyRevoked"  # type: ignore[attr-defined]

    pem, leaf_key = csr_pem(["vm"])
    order = acme.new_order(pem)
    answer_http01(acme, order, responder)
    done = acme.poll_and_finalize(order, datetime.now() + timedelta(seconds=30))
    second = x509.load_pem_x509_certificates(done.fullchain_pem.encode())[0]
    # Another account, holding no authorization for "vm", may not revoke it...
    other, _, _ = registered(acme_server)
    with pytest.raises(errors.Error) as refused:
        other.revoke(second, 0)
    assert refused.value.typ == "urn:ietf:params:acme:error:unauthorized"  # type: ignore[attr-defined]
    # ...but a request signed by the certificate's own key may.
    by_key = make_client(acme_server, leaf_key)
    by_key.revoke(second, 4)


def test_orders_list_is_paginated(acme_server: AcmeServer) -> None:
    from ostiary.acme.orders import ORDERS_PER_PAGE

    acme, account, _ = registered(acme_server)
    for _ in range(ORDERS_PER_PAGE + 1):
        acme.new_order(csr_pem(["localhost"])[0])
    acme.net.account = account
    orders_url = acme.net.post(account.uri, None).json()["orders"]
    first = acme.net.post(orders_url, None)
    assert len(first.json()["orders"]) == ORDERS_PER_PAGE
    following = first.links["next"]["url"]
    second = acme.net.post(following, None)
    assert len(second.json()["orders"]) == 1
    assert "next" not in second.links
