"""The QuickBooks Online side: HTTP client (limits, faults, retries), OAuth 2.0 tokens.

`qbo` knows nothing of PostgreSQL except through the `TokenStore` it is given.

    store = PgTokenStore(pool, SecretBox(settings.secret_key))      # poller.store.tokens
    client = QboClient(session, settings, store)                    # one per process
    api = client.realm(instance_id, realm_id)                       # a types.RealmApi
    result = await api.cdc(("Customer", "Invoice"), since)          # since: aware datetime
"""

from poller.qbo.auth import Credentials, OAuthClient, TokenManager, TokenSet, TokenStore
from poller.qbo.client import QboClient, RealmClient, RetryPolicy
from poller.qbo.limiter import LimiterConfig, RealmLimiter

__all__ = [
    "Credentials",
    "LimiterConfig",
    "OAuthClient",
    "QboClient",
    "RealmClient",
    "RealmLimiter",
    "RetryPolicy",
    "TokenManager",
    "TokenSet",
    "TokenStore",
]
