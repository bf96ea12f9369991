"""The OpenAPI 3.1 document of the API, generated from the route table and the pydantic
models (never kept by hand), and a readable HTML page of it (escaped, no scripts, offline)."""

from __future__ import annotations

import html
import json
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from poller import __version__
from poller.web.api import models
from poller.web.api.routes import BASE_PATH, ROUTES, Route

REF = "#/components/schemas/{model}"
SECURITY_SCHEME = "openConnectors"


def _models() -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = [models.ErrorBody]
    for route in ROUTES:
        for model in (route.request, route.response):
            if model is not None and model not in found:
                found.append(model)
    return found


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _errors() -> dict[str, Any]:
    reasons = {
        "400": "Invalid body or parameter (the message names the key, or the JSON line and column)",
        "401": "Invalid Organization or User secret, or invalid Element token",
        "404": "No such instance (or not the caller's)",
        "409": "An instance with that name exists",
        "413": "Body over 1 MiB",
        "415": "Body not JSON",
        "429": "Too many failed authentications from this address",
    }
    return {
        status: {"description": text, "content": _json_content(_ref(models.ErrorBody))}
        for status, text in reasons.items()
    }


def _operation(route: Route) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": route.summary,
        "operationId": f"{route.handler}_{route.method.lower()}",
    }
    parameters = [
        {
            "name": param.name,
            "in": param.where,
            "required": param.where == "path",
            "description": param.description,
            "schema": {"type": "integer"} if param.where == "path" else {"type": "string"},
        }
        for param in route.params
    ]
    if parameters:
        operation["parameters"] = parameters
    if route.request is not None:
        operation["requestBody"] = {
            "required": True,
            "content": _json_content(_ref(route.request)),
        }
    success: dict[str, Any] = {"description": "OK"}
    if route.response is not None:
        schema: dict[str, Any] = _ref(route.response)
        if route.many:
            schema = {"type": "array", "items": schema}
        success["content"] = _json_content(schema)
    elif route.handler == "openapi":
        success["content"] = _json_content({"type": "object"})
    else:
        success["content"] = {"text/html": {"schema": {"type": "string"}}}
    operation["responses"] = {"200": success}
    if not route.public:
        operation["responses"].update(_errors())
        operation["security"] = [{SECURITY_SCHEME: []}]
    else:
        operation["security"] = []
    return operation


def document() -> dict[str, Any]:
    _, top = models_json_schema([(model, "validation") for model in _models()], ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "qbo-poller API (Open Connectors platform calls)",
            "version": __version__,
            "description": "Instances and their events, as Open Connectors' "
            "/elements/api-v2 answered them. Every success is 200; errors are "
            '{"requestId", "message"}. Lists page with pageSize/nextPage and the '
            "Elements-Next-Page-Token header.",
        },
        "servers": [{"url": BASE_PATH}],
        "paths": paths,
        "components": {
            "schemas": top.get("$defs", {}),
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "User <user secret>, Organization <organization secret>"
                    "[, Element <instance token>] (parts in any order)",
                }
            },
        },
    }


_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
    "pre{background:#f4f4f4;padding:.5rem;overflow:auto}"
    ".m{font-weight:bold;display:inline-block;min-width:4.5rem}"
    "h2{border-top:1px solid #ccc;padding-top:1rem}"
)


def page(doc: dict[str, Any]) -> str:
    """The document as HTML: every string escaped, no script, nothing fetched."""
    esc = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{esc(doc['info']['title'])}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{esc(doc['info']['title'])}</h1><p>{esc(doc['info']['description'])}</p>",
        f"<p>Base URL: <code>{esc(doc['servers'][0]['url'])}</code>. Authorization: "
        f"<code>{esc(doc['components']['securitySchemes'][SECURITY_SCHEME]['description'])}"
        "</code>. The machine-readable document: <a href='openapi.json'>openapi.json</a>.</p>",
        "<h2>Routes</h2>",
    ]
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            parts.append(
                f"<h3><span class='m'>{esc(method.upper())}</span> <code>{esc(path)}</code></h3>"
                f"<p>{esc(operation['summary'])}</p>"
            )
            for param in operation.get("parameters", []):
                parts.append(
                    f"<p><code>{esc(param['name'])}</code> ({esc(param['in'])}): "
                    f"{esc(param['description'])}</p>"
                )
            body = operation.get("requestBody")
            if body is not None:
                parts.append(f"<p>Body: {esc(_schema_name(body['content']))}</p>")
            answer = operation["responses"]["200"].get("content", {})
            parts.append(f"<p>200: {esc(_schema_name(answer))}</p>")
    parts.append("<h2>Schemas</h2>")
    for name, schema in doc["components"]["schemas"].items():
        text = json.dumps(schema, indent=2, ensure_ascii=False)
        parts.append(f"<h3 id='{esc(name)}'>{esc(name)}</h3><pre>{esc(text)}</pre>")
    parts.append("</body></html>")
    return "".join(parts)


def _schema_name(content: dict[str, Any]) -> str:
    for media_type, entry in content.items():
        schema = entry.get("schema", {})
        if "$ref" in schema:
            return f"{media_type} {schema['$ref'].rsplit('/', 1)[-1]}"
        if schema.get("type") == "array" and "$ref" in schema.get("items", {}):
            return f"{media_type} array of {schema['items']['$ref'].rsplit('/', 1)[-1]}"
        return media_type
    return "empty"
