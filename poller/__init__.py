"""qbo-poller: QuickBooks Online changes turned into signed HTTP callbacks."""

from __future__ import annotations

__version__ = "0.1.0"
