"""The OpenAPI 3.1 document of the admin API, generated from the operation table and its pydantic models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from rolegate.admin.models import ErrorOut
from rolegate.admin.operations import Registry

API_PREFIX = "/.rolegate/api/v1"
REF = "#/components/schemas/{model}"
_PARAM = re.compile(r"{(\w+)}")

_ERRORS = {
    "401": "Not signed in",
    "403": "Not allowed (missing rolegate permission, delegation rule or CSRF)",
    "404": "Not found",
    "409": "Conflicts with the config file or with other state",
    "412": "If-Match does not match the current version",
    "422": "Invalid input; `errors` names each field",
    "428": "If-Match is required",
}


def build_openapi(registry: Registry, *, version: str = "1") -> dict[str, Any]:
    models: list[type[BaseModel]] = [ErrorOut]
    for op in registry.operations:
        for model in (op.body, op.response):
            if model is not None and model not in models:
                models.append(model)
    keyed = [(m, "validation") for m in models if m not in {o.response for o in registry.operations}] + [
        (m, "serialization") for m in models if m in {o.response for o in registry.operations}
    ]
    refs, defs = models_json_schema(keyed, ref_template=REF)
    schemas = dict(defs.get("$defs", {}))

    def ref(model: type[BaseModel], mode: str) -> dict[str, Any]:
        return refs[(model, mode)]

    paths: dict[str, dict[str, Any]] = {}
    for op in registry.operations:
        parameters: list[dict[str, Any]] = []
        for name in _PARAM.findall(op.path):
            schema = {
                "type": "string",
                "minLength": 1,
                "maxLength": 200,
                "pattern": op.path_patterns.get(name, r"^[A-Za-z0-9_.@:\-]+$"),
            }
            parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
        if op.query is not None:
            qschema = op.query.model_json_schema(ref_template=REF)
            required = set(qschema.get("required", ()))
            for name, prop in qschema.get("properties", {}).items():
                prop = {k: v for k, v in prop.items() if k != "title"}
                parameters.append(
                    {
                        "name": name,
                        "in": "query",
                        "required": name in required,
                        "schema": prop,
                        **({"description": prop["description"]} if "description" in prop else {}),
                    }
                )
        if op.if_match:
            parameters.append(
                {
                    "name": "If-Match",
                    "in": "header",
                    "required": False,
                    "description": "the ETag of your last read; required (428 without it)",
                    "schema": {"type": "string"},
                }
            )
        operation: dict[str, Any] = {
            "operationId": f"{op.method.lower()}_{op.handler.__name__}",
            "summary": op.summary,
            "tags": [op.tag],
        }
        if op.description:
            operation["description"] = op.description
        if parameters:
            operation["parameters"] = parameters
        if op.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(op.body, "validation")}},
            }
        success: dict[str, Any] = {"description": "OK"}
        if op.response is not None:
            success["content"] = {op.media: {"schema": ref(op.response, "serialization")}}
        elif op.media != "application/json":
            success["content"] = {op.media: {"schema": {"type": "string"}}}
        if op.etag:
            success["headers"] = {"ETag": {"schema": {"type": "string"}, "description": "send back in If-Match"}}
        responses: dict[str, Any] = {str(op.status): success}
        for code, text in _ERRORS.items():
            responses[code] = {
                "description": text,
                "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorOut")}}},
            }
        operation["responses"] = responses
        if op.public:
            operation["security"] = []
        if op.apps:  # open to apps (apps:) with their machine credential, for the object types they may write
            operation["x-rolegate-apps"] = True
        paths.setdefault(API_PREFIX + op.path, {})[op.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "rolegate admin API",
            "version": version,
            "description": "Roles, bindings, user settings, object grants, day passes, audit, explain and "
            "the permission matrix. Writes from a cookie session need the X-Rolegate-CSRF "
            "header (its value is `csrf_token` in GET /me's X-Rolegate-CSRF response header); "
            "every write accepts ?dry_run=1 and answers who gains or loses what. Apps (the config's apps: "
            "section) call the operations marked x-rolegate-apps with an IdP client-credentials "
            "token or a rolegate API key (rgk_...) as a bearer token; any other is 403 for them.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "rolegate_session"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"session": []}, {"bearer": []}],
    }
