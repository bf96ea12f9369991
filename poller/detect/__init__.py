"""Change detection: pair tasks, the per-instance ChangeFeed, the pure diff, reconciliation.

Data flows one way: QBO (through `poller.qbo`) → `feed` → `diff` → the outbox tables
(`poller.store.outbox`). Nothing here imports `poller.deliver`.
"""
