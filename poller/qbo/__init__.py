"""The QuickBooks Online side: HTTP client (limits, faults, retries), OAuth 2.0 tokens.

`qbo` knows nothing of PostgreSQL except through the `TokenStore` it is given.
"""
