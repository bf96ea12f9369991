from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from qbo_emulator import run_emulator
from tests.detect.harness import Env


@pytest.fixture
async def env(pool: asyncpg.Pool, db_dsn: str) -> AsyncIterator[Env]:
    async with run_emulator() as emu:
        yield Env(emu, pool, db_dsn)
