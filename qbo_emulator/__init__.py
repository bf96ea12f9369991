"""A faithful QuickBooks Online emulator (QBO Accounting API v3 + Intuit OAuth 2.0).

It reimplements documented QBO behaviour (see ``reference/qbo-api.md``) for
any number of realms, and imports nothing from ``poller`` (a package of its own):
it keeps its own entity facts so that a wrong belief in the daemon is caught here.

Start it in-process::

    from qbo_emulator import run_emulator

    async with run_emulator(per_second=None) as emu:        # options -> Emulator
        realm = emu.add_realm("9130350000000001", seed=1, per_entity=50)
        tokens = emu.issue_tokens(realm)                       # refresh + access token
        url = f"{emu.base_url}/v3/company/{realm}/query?query=select * from Customer"
        ...

or from a shell: ``qbo-emulator`` / ``qbo-poller emulator`` / ``python -m qbo_emulator``.

Interface (stable)
------------------
``run_emulator(host="127.0.0.1", port=0, *, emulator=None, shutdown_timeout=0.5, **options)``
    async context manager; yields the :class:`Emulator` with ``base_url``,
    ``token_url``, ``revoke_url``, ``discovery_url`` set while serving
    (``api_url(realm)`` = ``{base_url}/v3/company/{realm}``).
``create_app(emulator) -> aiohttp.web.Application``

``Emulator(**options)``; options (defaults): ``clock`` (real time),
``client_id``/``client_secret`` (one test client), ``clients`` (more),
``access_token_lifetime`` (3600 s), ``refresh_token_lifetime`` (8726400 s),
``refresh_rotation`` ("always" | "daily" | "never"), ``refresh_rotation_interval``
(86400 s), ``refresh_grace_seconds`` (0), ``code_lifetime`` (600 s),
``require_auth`` (True), ``expired_token_fault`` ("json" | "xml"),
``per_minute`` (500), ``per_second`` (10), ``in_flight`` (10),
``batch_per_minute`` (None = off; Intuit: 40), ``cdc_max_objects`` (1000),
``cdc_window_days`` (30), ``batch_max_items`` (30), ``batch_cdc_shape``
("array" | "object"), ``fault_seed``, ``realms`` + ``seed`` + ``per_entity`` +
``history_days`` (realms created at start).

Methods (synchronous; call them on the loop's thread):

- realms: ``add_realm(realm_id=None, *, seed=0, per_entity=0, history_days=60) -> str``,
  ``fill(realm_id, *, seed=0, per_entity=10, history_days=60) -> int``,
  ``realm(realm_id) -> Realm``, ``remove_realm(realm_id)``, ``count(realm_id, entity=None)``,
  ``ids(realm_id, entity, *, include_inactive=True) -> list[str]``
- objects (return plain JSON dicts): ``create(realm, entity, obj)``,
  ``update(realm, entity, obj, *, sparse=True)`` (SyncToken checked only if given),
  ``delete(realm, entity, id)`` (transaction: hard delete → tombstone; name list:
  Active=false → object), ``deactivate(realm, entity, id)``, ``reactivate(...)``,
  ``void(realm, entity, id)``, ``get(realm, entity, id) -> dict | None``,
  ``query(realm, statement) -> dict``, ``cdc(realm, entities, changed_since) -> dict``
  (raise ``QBOFault`` where the API would answer a fault)
- clock: ``emu.clock.now()``, ``.freeze(at=None)``, ``.unfreeze()``, ``.set(at)``,
  ``.advance(seconds=0, *, minutes=0, hours=0, days=0)``, ``.reset()``
- OAuth: ``issue_auth_code(realm, client_id=None, redirect_uri="http://localhost/callback",
  *, scope=...) -> str``, ``issue_tokens(realm, client_id=None) -> dict``
  (token response + ``realm_id``), ``register_client(id, secret)``,
  ``configure_oauth(*, access_token_lifetime, refresh_token_lifetime, refresh_rotation,
  refresh_rotation_interval, refresh_grace_seconds, code_lifetime)``,
  ``expire_access_tokens(realm=None) -> int``; properties ``client_id``, ``client_secret``
- limits/faults: ``set_limits(realm=None, *, per_minute, per_second, in_flight,
  batch_per_minute)``, ``throttle(realm, seconds)``, ``unthrottle(realm)``,
  ``inject_fault(kind, *, endpoint=None, realm=None, count=None, probability=None,
  seconds=0.0, status=500) -> int`` with kind in latency | error | reset | malformed
  and endpoint in query | cdc | batch | read | create | update | delete | void |
  token | revoke | entity (the single-object ones) | api (all /v3) | None (all),
  ``remove_fault(id)``, ``clear_faults()``, ``set_cdc_in_batch(realm, allowed)``
- counters: ``counters(realm=None) -> dict``, ``reset_counters()``; ``reset()``
  empties everything.

HTTP: the QBO API under ``/v3/company/{realm}/`` (query, cdc, batch, entity
read/write), ``POST /oauth2/v1/tokens/bearer``, ``POST /oauth2/v1/tokens/revoke``
(also ``/v2/oauth2/tokens/revoke``), ``GET /.well-known/openid_configuration``,
``GET /connect/oauth2`` (auto-approving consent), ``GET /op/v1/jwks`` and
``GET /v1/openid_connect/userinfo`` (OpenID: ``id_token`` is an RS256 JWT),
``companyinfo/{realm}``, ``preferences``, ``reports/ProfitAndLoss`` and
``reports/BalanceSheet``, and the JSON control API under ``/_emulator`` (see
``control.py`` and docs/emulator.md).  ``save_state(path)`` / ``load_state(path)``
(``--state FILE``) keep realms, id sequences, tokens and the clock across restarts.
"""

from .app import create_app
from .clock import Clock
from .core import Emulator
from .faults import QBOFault
from .handle import run_emulator
from .oauth import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_REDIRECT_URI

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_REDIRECT_URI",
    "Clock",
    "Emulator",
    "QBOFault",
    "create_app",
    "run_emulator",
]
