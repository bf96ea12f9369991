"""The control API under ``/_emulator`` (JSON in, JSON out).

GET    /_emulator                                  info: URLs, client, realms
POST   /_emulator/reset                            blank emulator
GET    /_emulator/realms                           realms with object counts
POST   /_emulator/realms                           {realm_id?, seed, per_entity, history_days}
DELETE /_emulator/realms/{realm}
POST   /_emulator/realms/{realm}/fill              {seed, per_entity, history_days}
POST   /_emulator/realms/{realm}/cdc_in_batch      {allowed: bool}
POST   /_emulator/realms/{realm}/throttle          {seconds}     (DELETE lifts it)
POST   /_emulator/realms/{realm}/entities/{entity}              create
GET    /_emulator/realms/{realm}/entities/{entity}/{id}         read (inactive too)
PATCH  /_emulator/realms/{realm}/entities/{entity}/{id}         sparse update
PUT    /_emulator/realms/{realm}/entities/{entity}/{id}         full update
DELETE /_emulator/realms/{realm}/entities/{entity}/{id}         delete (txn) / deactivate (list)
POST   /_emulator/realms/{realm}/entities/{entity}/{id}/{void|deactivate|reactivate}
GET    /_emulator/clock                            {now, time, frozen}
POST   /_emulator/clock                            {action: freeze|unfreeze|set|advance|reset,
                                                    at?, seconds?, minutes?, hours?, days?}
GET    /_emulator/faults                           rules
POST   /_emulator/faults                           {kind, endpoint?, realm?, count?, probability?,
                                                    seconds?, status?} -> {id}
DELETE /_emulator/faults[/{id}]
POST   /_emulator/limits                           {realm_id?, per_minute?, per_second?,
                                                    in_flight?, batch_per_minute?}
GET    /_emulator/counters[?realm=ID]              DELETE resets them
POST   /_emulator/oauth/codes                      {realm_id, client_id?, redirect_uri?, scope?}
POST   /_emulator/oauth/tokens                     {realm_id, client_id?}
POST   /_emulator/oauth/clients                    {client_id, client_secret}
POST   /_emulator/oauth/config                     {access_token_lifetime?, refresh_rotation?, ...}
POST   /_emulator/oauth/expire                     {realm_id?}  expire access tokens now
PUT    /_emulator/realms/{realm}/webhooks          {url, verifier, format?: legacy|cloudevents,
                                                    delay_s?}  send the realm's changes
GET    /_emulator/realms/{realm}/webhooks          its target (no verifier), DELETE stops it
GET    /_emulator/webhooks                         switches, pending count, recent deliveries
POST   /_emulator/webhooks                         {drop_fraction?, drop_next?, duplicates?,
                                                    retry_scale?, max_attempts?}
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from . import faults
from .clock import format_time

if TYPE_CHECKING:
    from .core import Emulator

PREFIX = "/_emulator"
ControlFn = Callable[[web.Request, "Emulator", dict[str, Any]], Any]


def add_routes(app: web.Application) -> None:
    """Every control endpoint under ``/_emulator``, as (method, path below it, handler)."""
    routes: list[tuple[str, str, ControlFn]] = [
        ("GET", "", info),
        ("POST", "/reset", reset),
        ("GET", "/realms", list_realms),
        ("POST", "/realms", add_realm),
        ("DELETE", "/realms/{realm}", remove_realm),
        ("POST", "/realms/{realm}/fill", fill),
        ("POST", "/realms/{realm}/cdc_in_batch", cdc_in_batch),
        ("POST", "/realms/{realm}/throttle", throttle),
        ("DELETE", "/realms/{realm}/throttle", unthrottle),
        ("POST", "/realms/{realm}/entities/{entity}", create),
        ("GET", "/realms/{realm}/entities/{entity}/{id}", read),
        ("PATCH", "/realms/{realm}/entities/{entity}/{id}", sparse_update),
        ("PUT", "/realms/{realm}/entities/{entity}/{id}", full_update),
        ("DELETE", "/realms/{realm}/entities/{entity}/{id}", delete),
        ("POST", "/realms/{realm}/entities/{entity}/{id}/{action}", object_action),
        ("GET", "/clock", get_clock),
        ("POST", "/clock", set_clock),
        ("GET", "/faults", list_faults),
        ("POST", "/faults", add_fault),
        ("DELETE", "/faults", clear_faults),
        ("DELETE", "/faults/{id}", remove_fault),
        ("POST", "/limits", limits),
        ("GET", "/counters", counters),
        ("DELETE", "/counters", reset_counters),
        ("POST", "/counters/reset", reset_counters),
        ("POST", "/oauth/codes", oauth_code),
        ("POST", "/oauth/tokens", oauth_tokens),
        ("POST", "/oauth/clients", oauth_client),
        ("POST", "/oauth/config", oauth_config),
        ("POST", "/oauth/expire", oauth_expire),
        ("PUT", "/realms/{realm}/webhooks", set_webhooks),
        ("POST", "/realms/{realm}/webhooks", set_webhooks),
        ("GET", "/realms/{realm}/webhooks", get_webhooks),
        ("DELETE", "/realms/{realm}/webhooks", remove_webhooks),
        ("GET", "/webhooks", webhook_status),
        ("POST", "/webhooks", webhook_switches),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, PREFIX + path, _control(handler))


def _control(fn: ControlFn) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        from .app import EMULATOR_KEY

        emu = request.app[EMULATOR_KEY]
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            return _json({"error": "body is not JSON"}, 400)
        if not isinstance(body, dict):
            return _json({"error": "body must be a JSON object"}, 400)
        try:
            result = fn(request, emu, body)
        except faults.QBOFault as fault:
            return _json(fault.body(emu.now_time()), fault.status)
        except KeyError as exc:
            return _json({"error": str(exc.args[0]) if exc.args else "not found"}, 404)
        except (ValueError, TypeError) as exc:
            return _json({"error": str(exc)}, 400)
        return _json({} if result is None else result)

    handler.__name__ = fn.__name__
    return handler


def _json(body: Any, status: int = 200) -> web.Response:
    from .entities import json_default

    return web.Response(
        body=orjson.dumps(body, default=json_default),
        status=status,
        headers={"Content-Type": "application/json"},
    )


def _segment(request: web.Request, key: str) -> str:
    return request.match_info[key]


def info(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    return {
        "base_url": emu.base_url,
        "token_url": emu.token_url,
        "revoke_url": emu.revoke_url,
        "discovery_url": emu.discovery_url,
        "client_id": emu.client_id,
        "client_secret": emu.client_secret,
        "realms": list(emu.realms),
        "now": format_time(emu.clock.now()),
    }


def reset(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    emu.reset()


def list_realms(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    return {
        rid: {name: len(t.live) for name, t in realm.tables.items() if t.live}
        for rid, realm in emu.realms.items()
    }


def add_realm(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    rid = emu.add_realm(
        body.get("realm_id"),
        seed=int(body.get("seed", 0)),
        per_entity=body.get("per_entity", 0),
        history_days=float(body.get("history_days", 60.0)),
    )
    return {"realm_id": rid, "objects": emu.count(rid)}


def remove_realm(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    emu.remove_realm(_segment(request, "realm"))


def fill(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    created = emu.fill(
        _segment(request, "realm"),
        seed=int(body.get("seed", 0)),
        per_entity=body.get("per_entity", 10),
        history_days=float(body.get("history_days", 60.0)),
    )
    return {"created": created}


def cdc_in_batch(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    emu.set_cdc_in_batch(_segment(request, "realm"), bool(body.get("allowed", True)))


def throttle(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    emu.throttle(_segment(request, "realm"), float(body.get("seconds", 60)))


def unthrottle(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    emu.unthrottle(_segment(request, "realm"))


def create(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    return emu.create(_segment(request, "realm"), _segment(request, "entity"), body)


def read(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    obj = emu.get(_segment(request, "realm"), _segment(request, "entity"), _segment(request, "id"))
    if obj is None:
        raise KeyError(f"no {_segment(request, 'entity')} {_segment(request, 'id')}")
    return obj


def _update(request: web.Request, emu: Emulator, body: dict[str, Any], sparse: bool) -> Any:
    return emu.update(
        _segment(request, "realm"),
        _segment(request, "entity"),
        {**body, "Id": _segment(request, "id")},
        sparse=sparse,
    )


def sparse_update(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    return _update(request, emu, body, True)


def full_update(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    return _update(request, emu, body, False)


def delete(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    return emu.delete(
        _segment(request, "realm"), _segment(request, "entity"), _segment(request, "id")
    )


def object_action(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    action = _segment(request, "action")
    fn = {
        "void": emu.void,
        "deactivate": emu.deactivate,
        "reactivate": emu.reactivate,
        "delete": emu.delete,
    }.get(action)
    if fn is None:
        raise KeyError(f"unknown action {action!r}")
    return fn(_segment(request, "realm"), _segment(request, "entity"), _segment(request, "id"))


def get_clock(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    now = emu.clock.now()
    return {"now": now.isoformat(), "time": format_time(now), "frozen": emu.clock.frozen}


def set_clock(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    action = body.get("action")
    clock = emu.clock
    if action == "freeze":
        clock.freeze(body.get("at"))
    elif action == "unfreeze":
        clock.unfreeze()
    elif action == "set":
        if not body.get("at"):
            raise ValueError("'at' is required")
        clock.set(body["at"])
    elif action == "advance":
        clock.advance(
            float(body.get("seconds", 0)),
            minutes=float(body.get("minutes", 0)),
            hours=float(body.get("hours", 0)),
            days=float(body.get("days", 0)),
        )
    elif action == "reset":
        clock.reset()
    else:
        raise ValueError("action must be freeze, unfreeze, set, advance or reset")
    return get_clock(request, emu, {})


def list_faults(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    return {"faults": [r.describe() for r in emu.faults.rules]}


def add_fault(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    allowed = {"endpoint", "realm", "count", "probability", "seconds", "status"}
    kwargs = {k: v for k, v in body.items() if k in allowed}
    return {"id": emu.inject_fault(str(body.get("kind")), **kwargs)}


def clear_faults(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    emu.clear_faults()


def remove_fault(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    if not emu.remove_fault(int(_segment(request, "id"))):
        raise KeyError("no such fault rule")


def limits(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    allowed = {"per_minute", "per_second", "in_flight", "batch_per_minute"}
    return emu.set_limits(body.get("realm_id"), **{k: v for k, v in body.items() if k in allowed})


def counters(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    return emu.counters(request.query.get("realm"))


def reset_counters(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    emu.reset_counters()


def oauth_code(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    kwargs = {k: body[k] for k in ("redirect_uri", "scope") if k in body}
    return {"code": emu.issue_auth_code(str(body["realm_id"]), body.get("client_id"), **kwargs)}


def oauth_tokens(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    return emu.issue_tokens(str(body["realm_id"]), body.get("client_id"))


def oauth_client(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    emu.register_client(str(body["client_id"]), str(body["client_secret"]))


def oauth_config(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    allowed = {
        "access_token_lifetime",
        "refresh_token_lifetime",
        "refresh_rotation",
        "refresh_rotation_interval",
        "refresh_grace_seconds",
        "code_lifetime",
    }
    emu.configure_oauth(**{k: v for k, v in body.items() if k in allowed})


def oauth_expire(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    return {"expired": emu.expire_access_tokens(body.get("realm_id"))}


# ------------------------------------------------------------------ webhooks
def set_webhooks(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    realm = emu.realm(_segment(request, "realm")).id
    url, verifier = body.get("url"), body.get("verifier")
    if not isinstance(url, str) or not isinstance(verifier, str):
        raise ValueError("url and verifier are required strings")
    return emu.configure_webhooks(
        realm,
        url,
        verifier,
        format=str(body.get("format", "legacy")),
        delay_s=float(body.get("delay_s", 1.0)),
    )


def get_webhooks(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    target = emu.webhooks.target(emu.realm(_segment(request, "realm")).id)
    return {"target": None if target is None else target.public()}


def remove_webhooks(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    emu.remove_webhooks(emu.realm(_segment(request, "realm")).id)


def webhook_status(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    return {
        **emu.webhooks.switches(),
        "pending": emu.webhooks.pending(),
        "recent": list(emu.webhooks.log)[-50:],
    }


_SWITCHES = ("drop_fraction", "drop_next", "duplicates", "retry_scale", "max_attempts")


def webhook_switches(request: web.Request, emu: Emulator, body: dict[str, Any]) -> Any:
    unknown = sorted(set(body) - set(_SWITCHES))
    if unknown:
        raise ValueError(f"unknown switches: {', '.join(unknown)}")
    return emu.webhook_switches(**body)
