from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from qbo_emulator import run_emulator


@pytest.fixture
async def emu() -> AsyncIterator[Any]:
    async with run_emulator() as emulator:
        yield emulator
