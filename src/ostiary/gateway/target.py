r"""The request target in one canonical form: what the route rules are checked against is what
the upstream receives (RFC 3986 section 6.2.2, RFC 9112 section 3.2).

An upstream decodes and normalises the path before it routes (``/%76ault``, ``/x/../vault``,
``//vault`` all reach ``/vault`` on many): a rule checked on the raw target is a bypass. So
the gateway decides, for every request, one of:

- refused (``400``): a target not in origin form (absolute form ``http://host/path``,
  authority form ``host:port``, asterisk form ``*``); a fragment (``#``); a malformed
  percent-encoding; an encoded ``/``, ``\``, ``.`` or ``;`` (``%2F``, ``%5C``, ``%2E``,
  ``%3B``) or control character (``%00``-``%1F``, ``%7F``) in the path; a raw ``\``, ``;`` or
  control character in the path. Each of these is read differently by different servers.
- rewritten: percent-encoded unreserved characters (``ALPHA DIGIT - _ ~``) are decoded, the
  other percent-encodings get upper-case hex digits, a raw character that may not appear in a
  path (``"``, ``<``, ``|``, a non-ASCII byte...) is percent-encoded, empty segments are
  collapsed (``//`` -> ``/``) and dot segments removed (``/a/./b/../c`` -> ``/a/c``, never
  above the root). The query is kept as it came (a ``%2F`` there is data, not a separator).

A target that is already plain (unreserved characters and ``/`` only, no ``//``, no segment
starting with a dot, no ``#``) is returned as it is, after one match of an expression without
backtracking (possessive quantifiers).
"""

from __future__ import annotations

import re

from ostiary.core.errors import MalformedInput

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
#: What a path segment may hold raw besides unreserved characters (RFC 3986 3.3 ``pchar``),
#: without ``;``, which some servers read as the start of path parameters.
_PCHAR_OTHER = frozenset(b"!$&'()*+,=:@")
_HEX = frozenset(b"0123456789abcdefABCDEF")
#: Never decoded, never passed on encoded: path separators for some servers, dot segments
#: once decoded, path parameters, and control characters.
_REFUSED_ENCODED = frozenset(b"/\\.;") | frozenset(range(0x20)) | {0x7F}
_REFUSED_RAW = frozenset(b"\\;") | frozenset(range(0x20)) | {0x7F}

#: An already canonical target, the common case: segments of unreserved characters that do
#: not start with a dot, then an optional query without a fragment.
_PLAIN = re.compile(
    rb"/(?:[A-Za-z0-9_~-][A-Za-z0-9._~-]*+/)*+(?:[A-Za-z0-9_~-][A-Za-z0-9._~-]*+)?+"
    rb"(?:\?[^#]*+)?+"
)


def canonical_target(target: bytes) -> tuple[bytes, bytes]:
    """The canonical path and the canonical target (path and query) of an HTTP request
    target; raises :class:`~ostiary.core.errors.MalformedInput` for a target refused with
    ``400`` (the module docstring lists them).
    """
    if _PLAIN.fullmatch(target) is not None:
        return target.partition(b"?")[0], target
    if not target.startswith(b"/"):
        raise MalformedInput(
            "the request target must be a path (absolute, authority and '*' forms are refused)"
        )
    if b"#" in target:
        raise MalformedInput("the request target must not carry a fragment ('#')")
    path, question, query = target.partition(b"?")
    canonical = canonical_path(path)
    return canonical, canonical + question + query


def canonical_path(path: bytes) -> bytes:
    """The canonical form of an origin-form path (starting with ``/``), as described in the
    module docstring; raises :class:`~ostiary.core.errors.MalformedInput`.
    """
    raw = path.split(b"/")
    kept: list[bytes] = []
    for segment in raw[1:]:
        if segment == b"" or segment == b".":
            continue
        if segment == b"..":
            if kept:
                kept.pop()
            continue
        kept.append(_canonical_segment(segment))
    directory = raw[-1] in (b"", b".", b"..")  # the path names a directory: keep its '/'
    if not kept:
        return b"/"
    return b"/" + b"/".join(kept) + (b"/" if directory else b"")


def _canonical_segment(segment: bytes) -> bytes:
    if segment.translate(None, _PLAIN_SEGMENT_BYTES) == b"":
        return segment
    out = bytearray()
    i, size = 0, len(segment)
    while i < size:
        byte = segment[i]
        if byte == 0x25:  # '%'
            pair = segment[i + 1 : i + 3]
            if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
                raise MalformedInput("the request path has a malformed percent-encoding")
            value = int(pair, 16)
            if value in _REFUSED_ENCODED:
                raise MalformedInput(
                    f"the request path must not encode {chr(value)!r} (%{value:02X})"
                    if 0x20 < value < 0x7F
                    else f"the request path must not encode a control character (%{value:02X})"
                )
            if value in _UNRESERVED:
                out.append(value)
            else:
                out += b"%%%02X" % value
            i += 3
            continue
        if byte in _REFUSED_RAW:
            raise MalformedInput(
                f"the request path must not contain {chr(byte)!r}"
                if 0x20 < byte < 0x7F
                else "the request path must not contain a control character"
            )
        if byte in _UNRESERVED or byte in _PCHAR_OTHER:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
        i += 1
    return bytes(out)


_PLAIN_SEGMENT_BYTES = bytes(sorted(_UNRESERVED | _PCHAR_OTHER))
