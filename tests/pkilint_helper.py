"""pkilint as an independent linter: the validators its own CLI tools build, as functions.

Each ``lint_*`` takes a DER document and returns the findings of severity ERROR or FATAL as
readable strings (empty when the document is clean), mirroring ``lint_pkix_cert``,
``lint_crl -t CRL -p PKIX`` and ``lint_ocsp_response``.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any

from pkilint import loader, pkix  # type: ignore[import-untyped]
from pkilint.pkix import (  # type: ignore[import-untyped]
    certificate,
    crl,
    extension,
    name,
    ocsp,
)
from pkilint.validation import ValidationFindingSeverity  # type: ignore[import-untyped]

SEVERITY = ValidationFindingSeverity.ERROR


@cache
def _certificate_validator() -> Any:
    return certificate.create_pkix_certificate_validator_container(
        certificate.create_decoding_validators(
            name.ATTRIBUTE_TYPE_MAPPINGS, extension.EXTENSION_MAPPINGS
        ),
        [
            certificate.create_issuer_validator_container([]),
            certificate.create_validity_validator_container(),
            certificate.create_subject_validator_container([]),
            certificate.create_extensions_validator_container([]),
            certificate.create_spki_validator_container([]),
        ],
    )


@cache
def _crl_validator() -> Any:
    return crl.create_pkix_crl_validator_container(
        [
            pkix.create_attribute_decoder(name.ATTRIBUTE_TYPE_MAPPINGS),
            pkix.create_extension_decoder(extension.EXTENSION_MAPPINGS),
        ],
        [
            crl.create_issuer_validator_container([]),
            crl.create_validity_validator_container([]),
            crl.create_extensions_validator_container([]),
        ],
    )


@cache
def _ocsp_validator() -> Any:
    return ocsp.create_pkix_ocsp_response_validator_container(
        [
            ocsp.create_response_decoder(),
            pkix.create_attribute_decoder(name.ATTRIBUTE_TYPE_MAPPINGS),
            pkix.create_extension_decoder(extension.EXTENSION_MAPPINGS),
        ],
        [],
    )


def _findings(results: Iterable[Any]) -> list[str]:
    return [
        f"{description.finding} at {result.node.path}"
        + (f": {description.message}" if description.message else "")
        for result in results
        for description in result.finding_descriptions
        if description.finding.severity <= SEVERITY
    ]


def lint_certificate(der: bytes) -> list[str]:
    document = loader.RFC5280CertificateDocumentLoader().load_der_document(der, "certificate")
    return _findings(_certificate_validator().validate(document.root))


def lint_crl(der: bytes) -> list[str]:
    document = loader.RFC5280CertificateListDocumentLoader().load_der_document(der, "crl")
    return _findings(_crl_validator().validate(document.root))


def lint_ocsp_response(der: bytes) -> list[str]:
    document = loader.RFC6960OCSPResponseDocumentLoader().load_der_document(der, "ocsp")
    return _findings(_ocsp_validator().validate(document.root))
