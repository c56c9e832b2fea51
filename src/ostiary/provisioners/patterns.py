"""Allowed-name patterns: which names a provisioner may put in certificates.

A pattern is a glob over the one text form of names, ``kind:value``
(:func:`ostiary.core.names.format_general_name`): ``dns:*.lab.example``,
``email:*@example.com``, ``upn:*@corp.example``, ``ip:10.0.0.*``, ``uri:spiffe://lab/*``,
and ``cn:`` for the subject's common name. ``*`` matches any run of characters (dots
included), ``?`` one character; nothing else is special. A pattern never matches a name of
another kind, and ``*.lab.example`` does not match ``lab.example`` itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from cryptography import x509

from ostiary.core.errors import BadRequest, NameNotAuthorized
from ostiary.core.names import common_name, format_general_name, parse_san

_KINDS = ("dns", "email", "ip", "uri", "upn", "pid", "cn")
#: Kinds whose values compare without regard to case (RFC 4343 for DNS; IPv6 hex digits).
_CASELESS_KINDS = frozenset({"dns", "email", "upn", "cn", "ip"})
_IPV4_PATTERN = re.compile(r"[0-9*?]+(\.[0-9*?]+){3}")
_IPV6_PATTERN = re.compile(r"[0-9a-fA-F*?]*(:[0-9a-fA-F*?]*){2,7}")


def normalize_name_pattern(pattern: str) -> str:
    """A pattern in its stored ``kind:glob`` form, the kind inferred when not given.

    ``*.lab.example`` becomes ``dns:*.lab.example``, ``*@example.com`` becomes
    ``email:*@example.com``, ``10.0.0.*`` becomes ``ip:10.0.0.*``; ``upn:``, ``uri:``,
    ``pid:`` and ``cn:`` (the subject's common name) must be written out. ``*`` matches any
    run of characters (dots included), ``?`` one character; nothing else is special.
    """
    text = pattern.strip()
    if not text:
        raise BadRequest("an allowed-name pattern is empty")
    prefix, colon, rest = text.partition(":")
    if colon and prefix.lower() in _KINDS and not rest.startswith("//"):
        kind, glob = prefix.lower(), rest
    elif "://" in text or text.startswith("urn:"):
        kind, glob = "uri", text
    elif "@" in text:
        kind, glob = "email", text
    elif _IPV4_PATTERN.fullmatch(text) or _IPV6_PATTERN.fullmatch(text):
        kind, glob = "ip", text
    else:
        kind, glob = "dns", text
    if not glob:
        raise BadRequest(f"an allowed-name pattern needs a value after {kind}: ({pattern!r})")
    if kind != "cn" and any(c.isspace() for c in glob):
        raise BadRequest(f"only a cn: pattern may contain spaces: {pattern!r}")
    if kind in _CASELESS_KINDS:
        glob = glob.lower()
    return f"{kind}:{glob}"


def _compile(pattern: str) -> re.Pattern[str]:
    kind, _, glob = pattern.partition(":")
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob]
    flags = re.IGNORECASE if kind in _CASELESS_KINDS else 0
    return re.compile(re.escape(kind) + ":" + "".join(parts), flags | re.DOTALL)


def name_matches(text: str, patterns: Sequence[str]) -> bool:
    """Whether a ``kind:value`` name matches one of the (normalized) ``patterns``."""
    return any(_compile(p).fullmatch(text) for p in patterns)


def check_allowed_names(
    subject: x509.Name, names: Sequence[x509.GeneralName], patterns: Sequence[str]
) -> None:
    """Refuse any name (and a common name) outside ``patterns``; no patterns: no limit.

    Every SAN must match a pattern. The subject's common name must be one of the SAN values
    (``alice@example.com`` with ``email:alice@example.com``) or match a ``cn:`` pattern, so
    that a restricted provisioner cannot put an arbitrary name in the subject either.
    """
    if not patterns:
        return
    values: set[str] = set()
    for name in names:
        text = format_general_name(name)
        if not name_matches(text, patterns):
            raise NameNotAuthorized(
                f"{text} is outside the names this provisioner may grant", name=text
            )
        values.add(text.partition(":")[2].lower())
    cn = common_name(subject)
    if cn is not None and cn.lower() not in values and not name_matches(f"cn:{cn}", patterns):
        raise NameNotAuthorized(
            f"common name {cn!r} is outside the names this provisioner may grant", name=cn
        )


def default_sans_for(subject: str) -> tuple[str, ...]:
    """The SAN a bare subject implies when a token names none (step-ca's convention).

    An e-mail address, an IP address or a DNS name with a dot becomes the one SAN; anything
    else (``Alice Smith``, ``CN=..,O=..``) implies none.
    """
    text = subject.strip()
    if "=" in text or not ("@" in text or "." in text or ":" in text):
        return ()
    try:
        return (format_general_name(parse_san(text)),)
    except BadRequest:
        return ()
