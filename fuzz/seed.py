"""Write the seed corpora, ``fuzz/corpus/<harness>/``, from samples made by Ostiary's own
code (and tpm2-pytss for the TPM structures): ``python fuzz/seed.py``. A few small files
per harness; the fuzzer mutates from there.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import ocsp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # tests.scep.client: the tests' SCEP client

from joserfc import jws  # noqa: E402
from targets import ACME_URL, AUDIENCE, NOW, ca, scep_ra  # noqa: E402
from tests.scep.client import Request, make_csr, self_signed  # noqa: E402

from ostiary.client.enrollment import build_csr  # noqa: E402
from ostiary.config import CAConfig, dump_config  # noqa: E402
from ostiary.core.jws import b64url  # noqa: E402
from ostiary.core.pkcs12 import export_pkcs12  # noqa: E402
from ostiary.provisioners import _jose  # noqa: E402
from ostiary.provisioners.base import ProvisionerClaims  # noqa: E402
from ostiary.provisioners.jwk import ALGORITHM, JWKProvisioner  # noqa: E402


def acme_requests() -> dict[str, bytes]:
    """Flattened JWS bodies as an ACME client sends them: by ``kid`` and with ``jwk``."""
    key = _jose.import_private_key(ca()[0])
    payload = json.dumps({"identifiers": [{"type": "dns", "value": "device-1.lab"}]}).encode()
    by_kid = {"alg": "ES256", "nonce": "n0nce", "url": ACME_URL, "kid": "https://ca.fuzz/a/1"}
    by_jwk = {"alg": "ES256", "nonce": "n0nce", "url": ACME_URL, "jwk": key.as_dict(private=False)}
    out = {}
    for name, header, body in (
        ("kid.json", by_kid, payload),
        ("jwk.json", by_jwk, payload),
        ("post-as-get.json", by_kid, b""),
    ):
        registry = jws.JWSRegistry(strict_check_header=False)
        signed = jws.serialize_json({"protected": header}, body, key, registry=registry)
        out[name] = json.dumps(signed).encode()
    return out


def scep_messages() -> dict[str, bytes]:
    """PKCSReq and CertPoll pkiMessages from the tests' SCEP client, encrypted to the RA."""
    device = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signer = self_signed(device, "device-1")
    csr = make_csr(device, "device-1", "challenge").public_bytes(serialization.Encoding.DER)
    ra = scep_ra()[1]
    return {
        f"{kind}-{cipher}.der": Request(
            device, signer, message_type, csr, [ra], cipher=cipher, digest=digest
        ).der()
        for kind, message_type, cipher, digest in (
            ("pkcsreq", 19, "aes256_cbc", "sha256"),
            ("pkcsreq", 19, "des", "sha1"),
            ("certpoll", 20, "tripledes_3key", "sha512"),
        )
    }


def ssh_keys() -> dict[str, bytes]:
    """Public key lines written by ssh-keygen (the real client), and one bare blob."""
    out = {}
    with tempfile.TemporaryDirectory() as folder:
        for kind in ("ed25519", "ecdsa", "rsa"):
            path = Path(folder) / kind
            command = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "fuzz@lab", "-f", path]
            subprocess.run(command, check=True)
            out[f"{kind}.pub"] = path.with_suffix(".pub").read_bytes()
    out["blob.txt"] = b"b" + out["ed25519.pub"].split()[1]
    return out


def samples() -> dict[str, dict[str, bytes]]:
    import tpm2_pytss as tss

    key, root = ca()
    pem = root.public_bytes(serialization.Encoding.PEM)
    der = root.public_bytes(serialization.Encoding.DER)
    name = x509.Name.from_rfc4514_string("CN=device-1")
    request = build_csr(name, [x509.DNSName("device-1.lab")], key)
    token = _jose.sign_jwt(
        {"alg": ALGORITHM, "kid": "fuzz", "typ": "JWT"},
        {
            "iss": "fuzz",
            "aud": AUDIENCE,
            "sub": "device-1",
            "iat": int(NOW.timestamp()),
            "exp": int((NOW + timedelta(minutes=5)).timestamp()),
            "jti": "a" * 32,
        },
        _jose.import_private_key(key),
    )
    provisioner = JWKProvisioner.create("fuzz", password=b"fuzz", claims=ProvisionerClaims())
    builder = ocsp.OCSPRequestBuilder().add_certificate(root, root, hashes.SHA1())
    with_nonce = builder.add_extension(x509.OCSPNonce(b"0123456789abcdef"), critical=False)
    ocsp_plain = builder.build().public_bytes(serialization.Encoding.DER)
    public = tss.TPMT_PUBLIC.parse("ecc256:ecdsa-sha256", objectAttributes="sign|fixedtpm")
    attest = tss.TPMS_ATTEST(magic=0xFF544347, type=tss.TPM2_ST.ATTEST_CERTIFY)
    attest.extraData = b"nonce"
    attest.attested.certify.name = public.get_name()
    signature = tss.TPMT_SIGNATURE(sigAlg=tss.TPM2_ALG.ECDSA)
    signature.signature.ecdsa.hash = tss.TPM2_ALG.SHA256
    signature.signature.ecdsa.signatureR = b"\x01" * 32
    signature.signature.ecdsa.signatureS = b"\x02" * 32
    statement = {
        "nonce": "n" * 32,
        "ak_chain": [base64.b64encode(der).decode()],
        "certify_info": "AA==",
    }
    config = CAConfig(name="Fuzz", dns=("ca.lab",), policies=("1.3.6.1.4.1.99999.1",))
    return {
        "certificate": {"root.pem": pem, "root.der": der, "chain.pem": pem + pem},
        "csr": {
            "device.pem": request.public_bytes(serialization.Encoding.PEM),
            "device.der": request.public_bytes(serialization.Encoding.DER),
        },
        "jwt": {"valid.jwt": token.encode("ascii")},
        "jwk": {"provisioner.json": json.dumps(provisioner.to_config()).encode()},
        "ocsp": {
            "plain.der": ocsp_plain,
            "nonce.der": with_nonce.build().public_bytes(serialization.Encoding.DER),
            "get.txt": b64url(ocsp_plain).encode("ascii"),
        },
        "tpm": {
            "attest.bin": b"a" + attest.marshal(),
            "public.bin": b"p" + public.marshal(),
            "signature.bin": b"s" + signature.marshal(),
            "statement.json": b"j" + json.dumps(statement).encode(),
        },
        "pkcs12": {
            "password.p12": b"p" + export_pkcs12(root, key, password=b"fuzz"),
            "empty.p12": b"e" + export_pkcs12(root, key, password=None),
        },
        "gateway_head": {
            "get.http": b"GET /a/b?c=d HTTP/1.1\r\nHost: app.lab\r\nX-Forwarded-For: 1\r\n\r\n",
            "post.http": b"POST /%7Eu/./x/../y HTTP/1.1\r\nHost: a\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            "upgrade.http": b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\n\r\n",
        },
        "target": {"plain": b"/a/b?x=1", "dots": b"/a/./b/../%7e%41%2F;x?q"},
        "config_toml": {"ostiary.toml": dump_config(config).encode()},
        "est_csr": {
            "one-line.b64": base64.b64encode(request.public_bytes(serialization.Encoding.DER)),
            "lines.b64": base64.encodebytes(request.public_bytes(serialization.Encoding.DER)),
        },
        "scep_webhook": {
            "allow.json": json.dumps(
                {"allow": True, "subject": "CN=alice", "san": ["email:alice@corp.example"]}
            ).encode(),
            "deny.json": json.dumps({"allow": False, "reason": "unknown device"}).encode(),
        },
        "acme_jws": acme_requests(),
        "scep": scep_messages(),
        "ssh_key": ssh_keys(),
        "device_attest": {
            "apple.cbor": cbor2.dumps({"fmt": "apple", "attStmt": {"x5c": [der]}}),
            "tpm.cbor": cbor2.dumps(
                {
                    "fmt": "tpm",
                    "attStmt": {
                        "ver": "2.0",
                        "x5c": [der],
                        "alg": -7,
                        "sig": signature.marshal(),
                        "certInfo": attest.marshal(),
                        "pubArea": public.marshal(),
                    },
                    "authData": b"",
                }
            ),
        },
    }


def main() -> None:
    for harness, files in samples().items():
        folder = HERE / "corpus" / harness
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)
    print(f"seeds written under {HERE / 'corpus'}")


if __name__ == "__main__":
    main()
