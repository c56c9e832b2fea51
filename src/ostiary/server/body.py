"""Reading request bodies with a size cap and a media-type check, then parsing them.

Endpoints that take a body read it here, never through the framework's implicit parsing, so
that every bad body is refused the same way: a wrong or missing ``Content-Type`` is 415, a
body past the cap (declared by ``Content-Length`` or counted while streaming) is 413, empty
or unparseable input is 400. The cap is enforced while reading: an oversized body is never
held in memory.
"""

from __future__ import annotations

import json
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from ostiary.config import describe_validation_error
from ostiary.core.errors import MalformedInput
from ostiary.server.problems import BodyTooLarge, UnsupportedMediaType

#: The largest body an endpoint accepts: a CSR with a 16384-bit RSA key and a token fit.
MAX_BODY_SIZE = 64 * 1024

JSON = "application/json"

Model = TypeVar("Model", bound=BaseModel)


def media_type_of(request: Request) -> str | None:
    """The request's media type without parameters, lower-case; None if absent."""
    return _media_type(request.headers.get("content-type"))


def _media_type(content_type: str | None) -> str | None:
    if content_type is None:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None


def check_media_type(content_type: str | None, media_types: tuple[str, ...]) -> None:
    """Refuse (415) a ``Content-Type`` header value that is none of ``media_types``."""
    media_type = _media_type(content_type)
    if media_type not in media_types:
        shown = media_type or "none"
        raise UnsupportedMediaType(
            f"the body must be {' or '.join(media_types)}, not {shown}",
            content_type=shown,
        )


async def read_body(
    request: Request, *, media_types: tuple[str, ...], limit: int = MAX_BODY_SIZE
) -> bytes:
    """The request body, if it has one of ``media_types`` and at most ``limit`` bytes."""
    check_media_type(request.headers.get("content-type"), media_types)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge.over(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge.over(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, model: type[Model]) -> Model:
    """The body as ``model``: ``application/json``, capped, parsed and validated."""
    body = await read_body(request, media_types=(JSON,))
    return parse_json(body, model)


def parse_json(body: bytes, model: type[Model]) -> Model:
    """Validate ``body`` as ``model``; every failure is :class:`MalformedInput`."""
    if not body.strip():
        raise MalformedInput("the request body is empty: send a JSON object")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, int digits
        raise MalformedInput("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise MalformedInput("the request body must be a JSON object")
    try:
        holds_nul = _holds_nul(data)
    except RecursionError:
        raise MalformedInput("the request body is nested too deeply") from None
    if holds_nul:  # PostgreSQL text cannot store it (a 500 the API fuzzing found)
        raise MalformedInput("the request body must not contain a NUL character (\\u0000)")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise MalformedInput(f"invalid request: {describe_validation_error(exc)}") from None


def refuse_nul(name: str, value: str | None) -> None:
    """A query or path parameter with U+0000 is refused: PostgreSQL text cannot hold it (a
    search for one was a 500 there, which the API fuzzing found), and no stored value has it.
    """
    if value is not None and "\x00" in value:
        raise MalformedInput(f"{name} must not contain a NUL character (\\u0000)")


def _holds_nul(value: object) -> bool:
    """Whether a parsed JSON value has U+0000 in a string (a member name or a value)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


def json_request_body(model: type[BaseModel]) -> dict[str, object]:
    """OpenAPI ``openapi_extra`` declaring ``model`` as the JSON request body."""
    return {
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": model.model_json_schema()}},
        }
    }


__all__ = [
    "JSON",
    "MAX_BODY_SIZE",
    "check_media_type",
    "json_request_body",
    "media_type_of",
    "parse_json",
    "read_body",
    "read_json",
    "refuse_nul",
]
