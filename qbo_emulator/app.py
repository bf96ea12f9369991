"""HTTP routes: the QBO API, Intuit's OAuth endpoints and the control API.

QBO API (``/v3/company/{realm}/...``): ``query`` (GET ``?query=`` or POST with
``Content-Type: application/text``), ``cdc``, ``batch``, ``GET {entity}/{id}``
and ``POST {entity}`` (create, full/sparse update, ``?operation=delete``,
``?operation=void`` or ``?operation=update&include=void``).  ``minorversion``
is accepted and ignored (anything below 75 is 75 anyway).

Every response carries ``intuit_tid`` (and ``Intuit-Tid``, as recorded from a
live sandbox); API responses also carry ``QBO-Version``.  Successful JSON is
``application/json;charset=utf-8``, faults ``application/json``, as recorded.

Order of checks for an API request: count it, authenticate the bearer token
(401/403), admit it through the realm's limits (429 XML), draw injected faults
(latency inside the in-flight slot, then reset / 5xx / malformed), answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web

from . import control, faults
from .core import QBO_VERSION, Emulator
from .oauth import Chain, TokenError, subject_of

EMULATOR_KEY = web.AppKey("qbo_emulator", Emulator)
# RequestKey is aiohttp >= 3.12; a plain string key works everywhere else.
_BODY_KEY: Any = (
    web.RequestKey("qbo_json_body", object) if hasattr(web, "RequestKey") else "qbo_json_body"
)
SENDER_STOP_S = 1.0
JSON_OK = "application/json;charset=utf-8"
JSON_FAULT = "application/json"
XML = "application/xml"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(emulator: Emulator) -> web.Application:
    """The aiohttp application serving ``emulator``."""
    app = web.Application(middlewares=[_middleware], client_max_size=32 * 1024 * 1024)
    app[EMULATOR_KEY] = emulator
    router = app.router
    v3 = "/v3/company/{realm}"
    router.add_route("GET", v3 + "/query", handle_query, name="query")
    router.add_route("POST", v3 + "/query", handle_query, name="query_post")
    router.add_route("GET", v3 + "/cdc", handle_cdc, name="cdc")
    router.add_route("POST", v3 + "/batch", handle_batch, name="batch")
    router.add_route("GET", v3 + "/reports/{report}", handle_report, name="report")
    router.add_route("GET", v3 + "/preferences", handle_preferences, name="preferences")
    router.add_route("GET", v3 + "/{entity}/{id}", handle_read, name="read")
    router.add_route("POST", v3 + "/{entity}", handle_write, name="write")
    router.add_route("*", "/v3/{tail:.*}", handle_unknown_api, name="unknown")
    router.add_route("POST", "/oauth2/v1/tokens/bearer", handle_token, name="token")
    router.add_route("POST", "/oauth2/v1/tokens/revoke", handle_revoke, name="revoke")
    router.add_route("POST", "/v2/oauth2/tokens/revoke", handle_revoke, name="revoke_v2")
    router.add_route("GET", "/.well-known/openid_configuration", handle_discovery, name="discovery")
    router.add_route(
        "GET",
        "/.well-known/openid_sandbox_configuration",
        handle_discovery,
        name="discovery_sandbox",
    )
    router.add_route("GET", "/connect/oauth2", handle_authorize, name="authorize")
    router.add_route("GET", "/op/v1/jwks", handle_jwks, name="jwks")
    router.add_route("GET", "/v1/openid_connect/userinfo", handle_userinfo, name="userinfo")
    control.add_routes(app)
    app.cleanup_ctx.append(_webhook_sender)
    return app


async def _webhook_sender(app: web.Application) -> AsyncIterator[None]:
    """The webhook sender's task lives exactly as long as the app serves."""
    sender = app[EMULATOR_KEY].webhooks
    task = asyncio.create_task(sender.run(), name="qbo-emulator-webhooks")
    yield
    sender.stop()
    # On timeout wait_for cancels the task (a send still waiting for its answer) and awaits it.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(task, timeout=SENDER_STOP_S)


def _emu(request: web.Request) -> Emulator:
    return request.app[EMULATOR_KEY]


# ---------------------------------------------------------------- responses
def json_response(body: Any, emu: Emulator, status: int = 200) -> web.Response:
    return web.Response(body=emu.dumps(body), status=status, headers={"Content-Type": JSON_OK})


def fault_response(fault: faults.QBOFault, emu: Emulator) -> web.Response:
    return web.Response(
        body=emu.dumps(fault.body(emu.now_time())),
        status=fault.status,
        headers={"Content-Type": JSON_FAULT},
    )


def xml_response(body: bytes, status: int) -> web.Response:
    return web.Response(body=body, status=status, headers={"Content-Type": XML})


def new_tid() -> str:
    """``1-5f732fa0-904c9f2c48d92e264a539496``: the shape recorded from QBO."""
    return f"1-{int(time.time()):08x}-{secrets.token_hex(12)}"


# --------------------------------------------------------------- middleware
_API_ENDPOINT = {
    "query": "query",
    "query_post": "query",
    "cdc": "cdc",
    "batch": "batch",
    "read": "read",
    "preferences": "read",
    "report": "report",
}


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    tid = new_tid()
    emu = _emu(request)
    route = request.match_info.route.name
    try:
        if request.path.startswith("/v3/"):
            resp = await _api(request, handler, emu, route)
        elif route in ("token", "revoke", "revoke_v2"):
            resp = await _with_faults(
                request, handler, emu, "token" if route == "token" else "revoke", None
            )
        else:
            resp = await handler(request)
    except web.HTTPException as exc:  # redirects, 404/405 outside the API
        _tag(exc, tid)
        raise
    _tag(resp, tid)
    return resp


def _tag(resp: web.StreamResponse, tid: str) -> None:
    # Intuit documents "intuit_tid"; a live sandbox was recorded sending "Intuit-Tid".
    resp.headers["intuit_tid"] = tid
    resp.headers["Intuit-Tid"] = tid


_REALM_IN_PATH = re.compile(r"^/v3/company/([^/]+)/")


async def _api(
    request: web.Request, handler: Handler, emu: Emulator, route: str | None
) -> web.StreamResponse:
    realm = request.match_info.get("realm")
    endpoint = await _classify(request, route)
    if route == "unknown":
        # Unknown resource: authenticate, then answer 400 "Unsupported Operation".
        realm_match = _REALM_IN_PATH.match(request.path)
        realm = realm_match.group(1) if realm_match else None
        emu.count_request(realm, endpoint)
        resp = _authenticate(request, emu, realm) or await handler(request)
        resp.headers["QBO-Version"] = QBO_VERSION
        return resp
    emu.count_request(realm, endpoint)
    resp = await _guarded(request, handler, emu, endpoint, realm)
    resp.headers["QBO-Version"] = QBO_VERSION
    return resp


async def _guarded(
    request: web.Request, handler: Handler, emu: Emulator, endpoint: str, realm: str | None
) -> web.StreamResponse:
    denied = _authenticate(request, emu, realm)
    if denied is not None:
        return denied
    if realm is None or realm not in emu.realms:
        return web.Response(
            body=orjson.dumps(faults.authorization_failed_json(int(emu.clock.timestamp() * 1000))),
            status=403,
            headers={"Content-Type": JSON_FAULT},
        )
    if not emu.limiter.admit(realm, batch=endpoint == "batch"):
        emu.count_request(realm, "throttled")
        return xml_response(faults.throttle_xml(emu.now_time()), 429)
    try:
        return await _with_faults(request, handler, emu, endpoint, realm)
    finally:
        emu.limiter.release(realm)


def _authenticate(request: web.Request, emu: Emulator, realm: str | None) -> web.Response | None:
    if not emu.require_auth:
        return None
    check = emu.oauth.check(request.headers.get("Authorization"), realm or "")
    if check.ok:
        return None
    epoch_ms = int(emu.clock.timestamp() * 1000)
    headers = {"WWW-Authenticate": 'Bearer realm="Intuit", error="invalid_token"'}
    if check.reason == "wrong_realm":
        return web.Response(
            body=orjson.dumps(faults.authorization_failed_json(epoch_ms)),
            status=403,
            headers={"Content-Type": JSON_FAULT},
        )
    if check.reason == "missing" or emu.expired_token_fault == "xml":
        return web.Response(
            body=faults.auth_fault_xml(emu.now_time()),
            status=401,
            headers={**headers, "Content-Type": XML},
        )
    detail = {
        "malformed": "Malformed bearer token: too short or too long",
        "unknown": "Token invalid",
        "revoked": f"Token revoked: {check.tid}",
        "expired": f"Token expired: {check.tid}",
    }[check.reason]
    return web.Response(
        body=orjson.dumps(faults.auth_failed_json(detail, epoch_ms)),
        status=401,
        headers={**headers, "Content-Type": JSON_FAULT},
    )


async def _classify(request: web.Request, route: str | None) -> str:
    if route in _API_ENDPOINT:
        return _API_ENDPOINT[route]
    if route != "write":
        return "other"
    op = request.query.get("operation", "").lower()
    if op == "delete":
        return "delete"
    if op == "void" or request.query.get("include", "").lower() == "void":
        return "void"
    if op in ("create", "update"):
        return op
    body = await _json_body(request)
    return "update" if isinstance(body, dict) and body.get("Id") not in (None, "") else "create"


async def _with_faults(
    request: web.Request, handler: Handler, emu: Emulator, endpoint: str, realm: str | None
) -> web.StreamResponse:
    rules = emu.faults.draw(endpoint, realm)
    delay = sum(r.seconds for r in rules if r.kind == "latency")
    if delay > 0:
        await asyncio.sleep(delay)
    if any(r.kind == "reset" for r in rules):
        _reset(request)
        return web.Response(status=200)  # never sent: the transport is gone
    error = next((r for r in rules if r.kind == "error"), None)
    if error is not None:
        return xml_response(faults.system_fault_xml(emu.now_time()), error.status)
    resp = await handler(request)
    if any(r.kind == "malformed" for r in rules):
        resp = _truncate(resp)
    return resp


def _reset(request: web.Request) -> None:
    """Drop the connection without a byte of answer (RST where possible)."""
    transport = request.transport
    if transport is not None:
        transport.abort()


def _truncate(resp: web.StreamResponse) -> web.StreamResponse:
    body = getattr(resp, "body", None)
    if not isinstance(body, (bytes, bytearray)) or len(body) < 2:
        return resp
    cut = web.Response(body=bytes(body[: max(1, len(body) // 2)]), status=resp.status)
    cut.headers["Content-Type"] = resp.headers.get("Content-Type", JSON_OK)
    return cut


async def _json_body(request: web.Request) -> Any:
    """The request's JSON body, parsed once and cached on the request."""
    if _BODY_KEY not in request:
        raw = await request.read()
        try:
            request[_BODY_KEY] = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            request[_BODY_KEY] = _BAD_JSON
    return request[_BODY_KEY]


_BAD_JSON = object()


def _qbo(fn: Callable[[web.Request, Emulator], Awaitable[web.StreamResponse]]) -> Handler:
    """Turn QBOFaults raised by an API handler into fault responses."""

    async def wrapper(request: web.Request) -> web.StreamResponse:
        emu = _emu(request)
        try:
            return await fn(request, emu)
        except faults.QBOFault as fault:
            return fault_response(fault, emu)

    wrapper.__name__ = fn.__name__
    return wrapper


# ------------------------------------------------------------- API handlers
@_qbo
async def handle_query(request: web.Request, emu: Emulator) -> web.StreamResponse:
    statement = request.query.get("query")
    if request.method == "POST":
        text = await request.text()
        statement = text if text.strip() else statement
    return json_response(emu.api_query(request.match_info["realm"], statement or ""), emu)


@_qbo
async def handle_cdc(request: web.Request, emu: Emulator) -> web.StreamResponse:
    params = {k.lower(): v for k, v in request.query.items()}
    body = emu.api_cdc(
        request.match_info["realm"], params.get("entities"), params.get("changedsince")
    )
    return json_response(body, emu)


@_qbo
async def handle_batch(request: web.Request, emu: Emulator) -> web.StreamResponse:
    body = await _json_body(request)
    if body is _BAD_JSON:
        raise faults.invalid_request_body("Error parsing request body: malformed JSON")
    realm = request.match_info["realm"]
    answer, kinds = emu.api_batch(realm, body)
    for kind in kinds:
        emu.count_request(realm, f"batch_{kind}")
    return json_response(answer, emu)


@_qbo
async def handle_read(request: web.Request, emu: Emulator) -> web.StreamResponse:
    path = request.match_info
    return json_response(emu.api_read(path["realm"], path["entity"], path["id"]), emu)


@_qbo
async def handle_preferences(request: web.Request, emu: Emulator) -> web.StreamResponse:
    realm = request.match_info["realm"]
    return json_response(emu.api_read(realm, "Preferences", "1"), emu)


@_qbo
async def handle_report(request: web.Request, emu: Emulator) -> web.StreamResponse:
    path = request.match_info
    params = {key.lower(): value for key, value in request.query.items()}
    return json_response(emu.api_report(path["realm"], path["report"], params), emu)


@_qbo
async def handle_write(request: web.Request, emu: Emulator) -> web.StreamResponse:
    body = await _json_body(request)
    if body is _BAD_JSON or body is None:
        raise faults.invalid_request_body("Error parsing request body: malformed JSON")
    path = request.match_info
    query = request.query
    _, answer = emu.api_write(
        path["realm"], path["entity"], body, query.get("operation"), query.get("include")
    )
    return json_response(answer, emu)


@_qbo
async def handle_unknown_api(request: web.Request, emu: Emulator) -> web.StreamResponse:
    raise faults.unknown_resource(request.path, str(request.url))


# ----------------------------------------------------------------- OAuth
def _oauth_json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        headers={
            "Content-Type": "application/json;charset=UTF-8",
            "Cache-Control": "no-cache, no-store",
            "Pragma": "no-cache",
        },
    )


def _realm_of_grant(emu: Emulator, form: dict[str, str]) -> str:
    code = emu.oauth.codes.get(form.get("code") or "")
    if code is not None:
        return code.realm
    token = emu.oauth.refresh_tokens.get(form.get("refresh_token") or "")
    return token.chain.realm if token is not None else ""


async def handle_token(request: web.Request) -> web.StreamResponse:
    emu = _emu(request)
    form = {k: str(v) for k, v in (await request.post()).items()}
    emu.count_request(_realm_of_grant(emu, form), "token")
    emu.oauth.issuer = _issuer(request)  # the id_token's iss equals the discovery issuer
    include_hard = (
        request.headers.get("x-include-refresh-token-hard-expires-in", "").lower() == "true"
    )
    try:
        body, _ = emu.oauth.token_request(
            form, request.headers.get("Authorization"), include_hard=include_hard
        )
    except TokenError as err:
        return _oauth_json(err.body, err.status)
    return _oauth_json(body)


async def handle_revoke(request: web.Request) -> web.StreamResponse:
    emu = _emu(request)
    raw = await request.read()
    form: dict[str, str] = {}
    token = None
    if request.content_type == "application/x-www-form-urlencoded":
        form = {k: str(v) for k, v in (await request.post()).items()}
        token = form.get("token")
    else:
        try:
            data = orjson.loads(raw) if raw else {}
            token = data.get("token") if isinstance(data, dict) else None
        except orjson.JSONDecodeError:
            return _oauth_json({"error": "invalid_request"}, 400)
    try:
        realm = emu.oauth.revoke(token, request.headers.get("Authorization"), form)
    except TokenError as err:
        emu.count_request("", "revoke")
        return _oauth_json(err.body, err.status)
    emu.count_request(realm or "", "revoke")
    return web.Response(status=200, headers={"Content-Type": "application/json;charset=UTF-8"})


def _issuer(request: web.Request) -> str:
    return f"{request.url.origin()}/op/v1"


async def handle_jwks(request: web.Request) -> web.StreamResponse:
    """The public key that verifies every id_token (discovery ``jwks_uri``)."""
    return _oauth_json(_emu(request).oauth.signer.jwks())


async def handle_userinfo(request: web.Request) -> web.StreamResponse:
    """OpenID userinfo for a valid access token (shape: samples/oauth_userinfo_response)."""
    emu = _emu(request)
    chain = emu.oauth.user_of(request.headers.get("Authorization"))
    if chain is None or "openid" not in chain.scope.split():
        return web.Response(
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="Intuit", error="invalid_token"'},
        )
    return _oauth_json(user_info(chain))


async def handle_discovery(request: web.Request) -> web.StreamResponse:
    """Intuit's discovery document, pointing at this emulator."""
    base = str(request.url.origin())
    doc = {
        "issuer": _issuer(request),
        "authorization_endpoint": f"{base}/connect/oauth2",
        "token_endpoint": f"{base}/oauth2/v1/tokens/bearer",
        "userinfo_endpoint": f"{base}/v1/openid_connect/userinfo",
        "revocation_endpoint": f"{base}/oauth2/v1/tokens/revoke",
        "jwks_uri": f"{base}/op/v1/jwks",
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile", "address", "phone"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "claims_supported": ["aud", "exp", "iat", "iss", "realmid", "sub"],
    }
    return _oauth_json(doc)


async def handle_authorize(request: web.Request) -> web.StreamResponse:
    """Consent screen stand-in: approves at once and redirects with a code.

    ``realmId`` (an emulator extension) picks the company; otherwise the first
    realm, or a new one.
    """
    emu = _emu(request)
    q = request.query
    client_id, redirect_uri = q.get("client_id", ""), q.get("redirect_uri", "")
    if client_id not in emu.oauth.clients or not redirect_uri or q.get("response_type") != "code":
        return web.Response(status=400, text="invalid_request")
    realm = q.get("realmId") or next(iter(emu.realms), None) or emu.add_realm()
    code = emu.issue_auth_code(
        realm, client_id, redirect_uri, scope=q.get("scope") or "com.intuit.quickbooks.accounting"
    )
    params = {"code": code, "state": q.get("state", ""), "realmId": realm}
    sep = "&" if "?" in redirect_uri else "?"
    raise web.HTTPFound(f"{redirect_uri}{sep}{urlencode(params)}")


def user_info(chain: Chain) -> dict[str, Any]:
    """The connected user's claims; the fields depend on the scopes granted, as at Intuit."""
    scopes = set(chain.scope.split())
    info: dict[str, Any] = {"sub": subject_of(chain)}
    if "email" in scopes:
        info.update(email=f"user-{chain.realm}@example.com", emailVerified=True)
    if "profile" in scopes:
        info.update(givenName="Emulated", familyName=f"User {chain.realm}")
    if "phone" in scopes:
        info.update(phoneNumber="+1 6505550100", phoneNumberVerified=False)
    if "address" in scopes:
        info["address"] = {
            "streetAddress": "2700 Coast Ave",
            "locality": "Mountain View",
            "region": "CA",
            "postalCode": "94043",
            "country": "US",
        }
    return info


__all__ = ["EMULATOR_KEY", "create_app"]
