"""Subject alternative names as the ``kind:value`` strings the store keeps and searches.

The text form is :func:`ostiary.core.names.format_general_name`, the one used everywhere
(tokens, the API, ``cert inspect``).
"""

from __future__ import annotations

from cryptography import x509

from ostiary.core.names import format_general_name, sans_of


def subject_alt_names(certificate: x509.Certificate) -> list[str]:
    """Every SAN of ``certificate`` as ``kind:value``, in certificate order; [] if none."""
    return [format_general_name(name) for name in sans_of(certificate.extensions)]
