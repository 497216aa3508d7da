"""The host service's OpenAPI 3.1 document, generated from the route table and the bodies.

Each operation's ``security`` and ``x-agentcell-audience`` come from its route's audience,
the same field the authentication middleware enforces, so the document cannot promise what
the server does not do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pydantic
from pydantic.json_schema import models_json_schema

import agentcell
from agentcell.daemon.api import ErrorBody

if TYPE_CHECKING:
    from agentcell.daemon.app import Route

__all__ = ["document"]

_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "tenant": [{"tenantToken": []}, {"adminToken": []}],
    "admin": [{"adminToken": []}],
    "public": [],
}
_ANSWERS = {
    "ndjson": ("application/x-ndjson", "Output frames, one JSON object per line."),
    "bytes": ("application/octet-stream", "The file's bytes."),
}


def _ref(model: type[pydantic.BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _success(route: Route) -> dict[str, Any]:
    if route.answer == "none":
        return {"description": "Done; no body."}
    content: dict[str, Any] = {}
    if route.answer in _ANSWERS:
        media, description = _ANSWERS[route.answer]
        content[media] = {"schema": {"type": "string"}}
        if route.response is not None:  # a background command answers with its Command
            content["application/json"] = {"schema": _ref(route.response)}
        return {"description": description, "content": content}
    schema = _ref(route.response) if route.response is not None else {"type": "object"}
    return {"description": "OK", "content": {"application/json": {"schema": schema}}}


def document(routes: Sequence[Route]) -> dict[str, Any]:
    """The API described for humans and generators."""
    models: set[type[pydantic.BaseModel]] = {ErrorBody}
    for route in routes:
        models.update(model for model in (route.request, route.response) if model is not None)
    _, schemas = models_json_schema(
        [(model, "validation") for model in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "operationId": route.handler,
            "summary": route.summary,
            "security": _SECURITY[route.audience],
            "x-agentcell-audience": route.audience,
            "responses": {
                str(route.status): _success(route),
                "default": {
                    "description": "An error: what went wrong, a reason tag and a fix.",
                    "content": {"application/json": {"schema": _ref(ErrorBody)}},
                },
            },
        }
        parameters: list[dict[str, Any]] = [
            {"name": part[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
            for part in route.path.split("/")
            if part.startswith("{")
        ]
        parameters += [
            {
                "name": param.name,
                "in": "query",
                "required": param.required,
                "description": param.description,
                "schema": {"type": param.kind},
            }
            for param in route.query
        ]
        if parameters:
            operation["parameters"] = parameters
        if route.body == "raw":
            operation["requestBody"] = {
                "required": True,
                "description": "The file's bytes, streamed.",
                "content": {"application/octet-stream": {"schema": {"type": "string"}}},
            }
        elif route.request is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(route.request)}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "agentcell host service",
            "version": agentcell.__version__,
            "description": (
                "Sandboxes for AI agents on one host. Tenant routes take a tenant token (its "
                "tenant's sandboxes only; another tenant's answer 404 as unknown ones do) or "
                "the admin token (any tenant). Admin routes take the admin token. Each "
                "operation's x-agentcell-audience is what the server enforces before any "
                "handler runs."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                "tenantToken": {"type": "http", "scheme": "bearer"},
                "adminToken": {"type": "http", "scheme": "bearer"},
            },
        },
    }
