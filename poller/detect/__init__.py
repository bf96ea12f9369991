"""Change detection: pair tasks, per-instance cycles (lease, ChangeFeed, commit), the pure diff.

Data flows one way: QBO (through `poller.qbo`) → `feed` → `cycle` (`diff`) → the outbox tables
(`poller.store.outbox`). Nothing here imports `poller.deliver`.
"""
