"""The OpenAPI 3.1 document, generated from the route table and the pydantic bodies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pydantic
from pydantic.json_schema import models_json_schema

import agentcell
from agentcell.controlplane.api import ErrorBody

if TYPE_CHECKING:
    from agentcell.controlplane.app import Route

__all__ = ["document"]

# Each operation's security comes from its route's audience, the same field the middleware
# enforces; ``x-agentcell-audience`` names the audience itself.
_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "agent": [{"agentCertificate": []}],
    "admin": [{"adminToken": []}],
    "public": [],
}


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
                "200": {
                    "description": "OK",
                    "content": {
                        route.content_type: {
                            "schema": {"$ref": f"#/components/schemas/{route.response.__name__}"}
                            if route.response is not None
                            else {
                                "type": "object"
                                if route.content_type.endswith("json")
                                else "string"
                            }
                        }
                    },
                },
                "default": {
                    "description": "An error, with what went wrong, a reason tag and a fix.",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
                    },
                },
            },
        }
        parameters = [
            {"name": part[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
            for part in route.path.split("/")
            if part.startswith("{")
        ]
        parameters += [
            {
                "name": param.name,
                "in": "query",
                "required": False,
                "description": param.description,
                "schema": {"type": param.kind},
            }
            for param in route.query
        ]
        if parameters:
            operation["parameters"] = parameters
        if route.request is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{route.request.__name__}"}
                    }
                },
            }
        if route.body_credential is not None:
            operation["description"] = f"Authenticated by {route.body_credential} in the body."
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "agentcell control plane",
            "version": agentcell.__version__,
            "description": (
                "Agents call /v1/agent/* over mutual TLS; their tenant and agent come from the "
                "verified client certificate's SPIFFE URI SAN, never from the request. "
                "Administrators call /v1/admin/* and /metrics with a bearer token, never on the "
                "agents' socket. Each operation's x-agentcell-audience (admin, agent, public) "
                "is what the server enforces before any handler runs."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                "agentCertificate": {"type": "mutualTLS"},
                "adminToken": {"type": "http", "scheme": "bearer"},
            },
        },
    }
