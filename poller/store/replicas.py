"""Replica heartbeats: the rows that keep a replica's instance leases live (DESIGN §8).

`beat` is written every few seconds by `poller.detect.heartbeat.Heartbeat`; the lease
statements of `poller.store.cursors` read it. The database clock alone decides whether a
heartbeat is fresh, so replicas' clocks need not agree.
"""

from __future__ import annotations

from poller.store.db import Conn, store_call
from poller.store.sql import queries

Q = queries("replicas")


@store_call
async def beat(conn: Conn, replica_id: str) -> None:
    """The replica is alive now (its row is created by the first beat)."""
    await conn.execute(Q["beat"], replica_id)


@store_call
async def forget(conn: Conn, replica_id: str) -> None:
    """The replica stopped gracefully: its row goes."""
    await conn.execute(Q["forget"], replica_id)


@store_call
async def prune(conn: Conn, silent_for_s: float) -> int:
    """Drop the rows of replicas silent for longer than `silent_for_s`; how many went."""
    status = await conn.execute(Q["prune"], float(silent_for_s))
    return int(status.rsplit(" ", 1)[-1])
