"""Delivery: the outbox → signed HTTP callbacks (DESIGN §2 dispatcher, §6 callbacks).

envelope (the Open Connectors body) · signing (Elements + Standard Webhooks headers) ·
schedule (retry delays, Retry-After) · ssrf (optional private-address guard) ·
dispatcher (claim, POST, record) · service (the supervisor's services) · admin (CLI).
"""
