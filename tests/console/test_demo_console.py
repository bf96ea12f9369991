"""`qbo-poller demo` turns the console on: it prints the URL and a login that works, and the
emulator's consent page lets a newcomer connect and create an instance (DESIGN §10)."""

from __future__ import annotations

import argparse
import asyncio
import io
import re
from pathlib import Path

import pytest

from poller.demo import run_demo
from tests.console.harness import ConsoleClient, instance_form

pytestmark = pytest.mark.slow
LOGIN = re.compile(r"console: (http://\S+)/ui/  \(user secret (\S+), organization secret (\S+)\)")


async def test_demo_prints_a_console_login_that_creates_an_instance(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The embedded PostgreSQL (pgserver) warns without a runtime directory.
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    out = io.StringIO()
    args = argparse.Namespace(duration=25.0, realms=1, rate=1.0, interval=2.0, webhooks=False)
    demo = asyncio.create_task(run_demo(args, out))
    try:
        for _ in range(300):
            found = LOGIN.search(out.getvalue())
            if found or demo.done():
                break
            await asyncio.sleep(0.1)
        if demo.done():
            demo.result()  # its exception, if it raised
        assert found is not None, out.getvalue()[-2000:]
        root, user_secret, organization_secret = found.groups()
        client = ConsoleClient.open(root)
        try:
            signed_in = await client.sign_in(user_secret, organization_secret)
            assert signed_in.url.endswith("/ui/instances"), signed_in.text[:300]
            connected = await client.post("/ui/connect", {})
            assert 'id="connected"' in connected.text, connected.text[:500]
            created = await client.post(
                "/ui/instances/new",
                instance_form("Newcomer", "http://127.0.0.1:9/hook", ["customers"]),
            )
            assert "Instance created" in created.text, created.text[:500]
        finally:
            await client.close()
    finally:
        demo.cancel()
        await asyncio.gather(demo, return_exceptions=True)
