"""A CA folder whose keys live in a PKCS#11 token (``kms = "pkcs11"`` in ``ostiary.toml``).

The folder holds settings, certificates and the database as for a file CA, but no
``secrets/`` key files: the root and intermediate keys are generated inside the token and
every signature is made there (:mod:`ostiary.signers.pkcs11`). The PIN opens the token; a
secret key in the token derives the sealing secret for provisioner keys (docs/hsm.md).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ostiary.authority.folder import (
    CAMaterial,
    CAPaths,
    IssuerKey,
    intermediate_urls,
    load_ca_public,
)
from ostiary.config import CAConfig, Pkcs11Settings, dump_config
from ostiary.core.ca import (
    NameConstraints,
    create_intermediate_certificate,
    create_root_certificate,
)
from ostiary.core.errors import BadRequest, Conflict, SignerUnavailable
from ostiary.core.names import parse_subject
from ostiary.signers.base import Signer
from ostiary.signers.pkcs11 import Pkcs11Signer, Pkcs11Token


def token_settings(config: CAConfig) -> Pkcs11Settings:
    if config.kms != "pkcs11" or config.pkcs11 is None:
        raise BadRequest("this CA keeps its keys in files, not in a PKCS#11 token")
    return config.pkcs11


def open_token(settings: Pkcs11Settings, pin: bytes) -> Pkcs11Token:
    return Pkcs11Token.open(Path(settings.module), settings.token, pin)


def init_token_ca_folder(
    paths: CAPaths, config: CAConfig, pin: bytes, *, now: datetime
) -> CAMaterial:
    """Create a CA folder whose root and intermediate keys are generated in the token."""
    settings = token_settings(config)
    if paths.exists() or paths.root_certificate.exists():
        raise Conflict(f"a CA already exists in {paths.root}: refusing to overwrite it")
    labels = (settings.root_key, settings.intermediate_key, settings.sealing_key)
    if len(set(labels)) != len(labels):
        raise BadRequest("the root, intermediate and sealing key labels must differ")
    token = open_token(settings, pin)
    try:
        for label in labels:
            if token.has_object(label):
                raise Conflict(
                    f"token {settings.token!r} holds an object labelled {label!r} already: "
                    "choose other labels or another token"
                )
        root_signer = token.generate(settings.root_key, config.key_type)
        intermediate_signer = token.generate(settings.intermediate_key, config.key_type)
        token.sealing_secret(settings.sealing_key, create=True)
        root = create_root_certificate(
            parse_subject(f"CN={config.name} Root CA"),
            root_signer.private_key,
            now=now,
            name_constraints=NameConstraints(config.permitted_names, config.excluded_names),
        )
        intermediate = create_intermediate_certificate(
            parse_subject(f"CN={config.name} Intermediate CA"),
            intermediate_signer.public_key(),
            root_certificate=root,
            root_key=root_signer.private_key,
            now=now,
            root_urls=intermediate_urls(config.url),
        )
    except BaseException:
        token.close()
        raise
    paths.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    (paths.root / "certs").mkdir(exist_ok=True)
    paths.root_certificate.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    paths.intermediate_certificate.write_bytes(
        intermediate.public_bytes(serialization.Encoding.PEM)
    )
    paths.config.write_text(dump_config(config), encoding="utf-8")
    signer = token.signer(settings.intermediate_key, owns_token=True)
    return CAMaterial(paths, config, root, intermediate, signer, _token_root_loader)


def load_token_ca_folder(paths: CAPaths, pin: bytes) -> CAMaterial:
    """Load settings and certificates, and open the issuing key in the token with ``pin``."""
    config, root, intermediate = load_ca_public(paths)
    signer = load_token_signer(config, pin, intermediate)
    try:
        rotated = tuple(
            IssuerKey(certificate, rotated_token_signer(paths, signer, certificate))
            for certificate in paths.rotated_intermediates()
        )
    except BaseException:
        signer.close()
        raise
    return CAMaterial(
        paths, config, root, intermediate, signer, _token_root_loader, rotated=rotated
    )


def rotated_label_file(paths: CAPaths, certificate: x509.Certificate) -> Path:
    """Where a rotated intermediate's key label is written (next to its certificate)."""
    key_id = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    return paths.rotated_certificates / f"{key_id.value.digest.hex()}.label"


def rotated_token_signer(
    paths: CAPaths, signer: Pkcs11Signer, certificate: x509.Certificate
) -> Pkcs11Signer:
    """The key of a rotated intermediate, on the session the first one opened."""
    label_file = rotated_label_file(paths, certificate)
    try:
        label = label_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise SignerUnavailable(f"{label_file} is missing: which token key signs?") from None
    rotated = signer.token.signer(label)
    _check_match(rotated, certificate, f"certs/intermediates/{label_file.stem}.crt")
    return rotated


def load_token_signer(config: CAConfig, pin: bytes, intermediate: x509.Certificate) -> Pkcs11Signer:
    """The issuing key in the token, checked against ``certs/intermediate.crt``."""
    settings = token_settings(config)
    token = open_token(settings, pin)
    try:
        signer = token.signer(settings.intermediate_key, owns_token=True)
        _check_match(signer, intermediate, "certs/intermediate.crt")
    except BaseException:
        token.close()
        raise
    return signer


def load_token_root_signer(material: CAMaterial) -> Signer:
    """The root key, on the session the issuing key already opened (closing it keeps that)."""
    signer = material.signer
    if not isinstance(signer, Pkcs11Signer):
        raise BadRequest("this CA keeps its keys in files, not in a PKCS#11 token")
    root_signer = signer.token.signer(token_settings(material.config).root_key)
    _check_match(root_signer, material.root, "certs/root.crt")
    return root_signer


def _token_root_loader(material: CAMaterial, _pin: bytes) -> Signer:
    return load_token_root_signer(material)


def sealing_secret(material: CAMaterial) -> bytes:
    """The secret that seals this token CA's provisioner keys, derived inside the token."""
    signer = material.signer
    if not isinstance(signer, Pkcs11Signer):
        raise BadRequest("this CA keeps its keys in files, not in a PKCS#11 token")
    return signer.token.sealing_secret(token_settings(material.config).sealing_key)


def _check_match(signer: Pkcs11Signer, certificate: x509.Certificate, where: str) -> None:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if signer.public_key().public_bytes(*spki) != certificate.public_key().public_bytes(*spki):
        raise SignerUnavailable(
            f"token key {signer.label!r} does not match {where}: wrong token or labels?"
        )
