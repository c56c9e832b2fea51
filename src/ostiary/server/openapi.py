"""The served OpenAPI document, made to resolve completely.

Request bodies are declared from pydantic models (:func:`~ostiary.server.body.json_request_body`),
whose JSON Schema keeps nested models under a local ``$defs`` with references such as
``#/$defs/Attestation``. In an OpenAPI document such a reference is read from the document's
root, where there is no ``$defs``, so tools (schemathesis, code generators) cannot resolve it
and skip the body. :func:`hoist_definitions` moves every such definition to
``components/schemas`` and points the references there.
"""

from __future__ import annotations

from typing import Any

_LOCAL = "#/$defs/"
_COMPONENTS = "#/components/schemas/"


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


__all__ = ["hoist_definitions"]
