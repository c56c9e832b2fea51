"""The served OpenAPI document, made to resolve completely.

Request bodies are declared from pydantic models (:func:`~ostiary.server.body.json_request_body`),
whose JSON Schema keeps nested models under a local ``$defs`` with references such as
``#/$defs/Attestation``. In an OpenAPI document such a reference is read from the document's
root, where there is no ``$defs``, so tools (schemathesis, code generators) cannot resolve it
and skip the body. :func:`hoist_definitions` moves every such definition to
``components/schemas`` and points the references there.

FastAPI documents a ``422`` validation error for every operation with parameters, but this
server answers every error, validation errors included (400), with an RFC 7807 problem
document (:mod:`ostiary.server.problems`). :func:`document_problems` says so: each
operation's ``default`` response is an ``application/problem+json`` :data:`PROBLEM_SCHEMA`,
and the ``422`` is gone.
"""

from __future__ import annotations

from typing import Any

_LOCAL = "#/$defs/"
_COMPONENTS = "#/components/schemas/"
_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})

#: An error answer (RFC 7807 section 3.1); problems may carry more members (a serial...).
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "urn:ostiary:error:<code>"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
    },
}


def hoist_definitions(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with every nested ``$defs`` moved to ``components/schemas`` (in place).

    A definition whose name is already a different component schema is an error: the two
    models must be renamed, not silently merged.
    """
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
            return
        if not isinstance(node, dict):
            return
        definitions = node.pop("$defs", None) or {}
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_LOCAL):
            node["$ref"] = _COMPONENTS + ref.removeprefix(_LOCAL)
        for value in node.values():
            visit(value)
        for name, schema in definitions.items():
            visit(schema)
            if schemas.setdefault(name, schema) != schema:
                raise ValueError(f"two different schemas are named {name!r} in the API")

    visit(document)
    return document


def document_problems(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with every error answer described as a problem document (in place)."""
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    problem = {
        "description": "an error: an RFC 7807 problem document",
        "content": {"application/problem+json": {"schema": {"$ref": _COMPONENTS + "Problem"}}},
    }
    for item in document.get("paths", {}).values():
        for method, operation in item.items():
            if method in _METHODS:
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                responses["default"] = problem
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return document


__all__ = ["PROBLEM_SCHEMA", "document_problems", "hoist_definitions"]
