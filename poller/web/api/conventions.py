"""Open Connectors' conventions (DESIGN §9): request ids, the error body, JSON bodies.

Every response carries `Elements-Request-Id` (24 hex), the same id as an error body's
`requestId`. Bodies are at most 1 MiB (413), JSON only (415), parsed with limits on nesting and
array sizes (400), and a syntax error names the line and column, never quoting the body back.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from poller import logs, metrics
from poller.errors import DatabaseError
from poller.instances import line_column
from poller.manage.errors import ManageError

log = logs.get_logger(__name__)

REQUEST_ID_HEADER = "Elements-Request-Id"
REQUEST_ID_KEY = web.RequestKey("request_id", str)
MAX_BODY_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_ARRAY_ITEMS = 10_000
MAX_NODES = 100_000
JSON_TYPES = ("application/json",)
NO_BODY = object()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error answered as `{"requestId", "message"}` with `status`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def new_request_id() -> str:
    return secrets.token_hex(12)


def json_response(
    data: Any, request: web.Request, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    response = web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )
    response.headers[REQUEST_ID_HEADER] = request[REQUEST_ID_KEY]
    return response


def error_response(
    request: web.Request, status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"requestId": request[REQUEST_ID_KEY], "message": message}
    return json_response(body, request, status=status, headers=headers)


_HTTP_MESSAGES = {
    404: "no such API route",
    405: "this route does not take that method",
}


@web.middleware
async def conventions_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: the request id, and every failure turned into the error body."""
    request[REQUEST_ID_KEY] = new_request_id()
    try:
        response = await handler(request)
    except ApiError as exc:
        response = error_response(request, exc.status, exc.message, exc.headers)
    except ManageError as exc:
        response = error_response(request, exc.status, str(exc))
    except DatabaseError as exc:
        log.warning("api_database_error", path=request.path, error=type(exc).__name__)
        response = error_response(request, 503, "the database is unavailable; try again")
    except web.HTTPException as exc:
        message = _HTTP_MESSAGES.get(exc.status, exc.reason)
        response = error_response(request, exc.status, message)
    response.headers.setdefault(REQUEST_ID_HEADER, request[REQUEST_ID_KEY])
    metrics.API_REQUESTS.labels(f"{response.status // 100}xx").inc()
    return response


async def read_json(request: web.Request, required: bool = True) -> Any:
    """The request's JSON body, or NO_BODY when there is none and none is required."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ApiError(413, "the body is larger than 1 MiB")
    raw = await _read_limited(request)
    if not raw.strip():
        if required:
            raise ApiError(400, "a JSON body is required")
        return NO_BODY
    content_type = request.content_type.lower()
    if content_type not in JSON_TYPES and not content_type.endswith("+json"):
        raise ApiError(415, "the body must be JSON (Content-Type: application/json)")
    return parse_json(raw)


async def _read_limited(request: web.Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, "the body is larger than 1 MiB")
        chunks.append(chunk)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = line_column(raw, exc.start)
        raise ApiError(
            400,
            f"invalid JSON: the body is not UTF-8: byte 0x{raw[exc.start]:02x} at line {line} "
            f"column {column} (byte offset {exc.start})",
        ) from None
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except ValueError as exc:
        raise ApiError(400, f"invalid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, f"invalid JSON: nested deeper than {MAX_DEPTH} levels") from None
    check_limits(value)
    return value


def check_limits(value: Any) -> None:
    """Nesting, array sizes and total size: walked without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise ApiError(400, f"invalid JSON: more than {MAX_NODES} values")
        if isinstance(item, dict | list) and depth > MAX_DEPTH:
            raise ApiError(400, f"invalid JSON: nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, list):
            if len(item) > MAX_ARRAY_ITEMS:
                raise ApiError(400, f"invalid JSON: an array holds more than {MAX_ARRAY_ITEMS}")
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
