"""A signed-in console client over HTTP (aiohttp with a cookie jar), for the tests that do not
need a browser, and the forms they post."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import aiohttp

_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match is not None, html[:500]
    return match.group(1)


@dataclass
class Page:
    status: int
    url: str
    text: str
    headers: dict[str, str]


@dataclass
class ConsoleClient:
    session: aiohttp.ClientSession
    root: str
    csrf: str = ""

    @classmethod
    def open(cls, root: str) -> ConsoleClient:
        # unsafe=True: keep cookies of an IP address host (127.0.0.1).
        return cls(aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)), root)

    async def close(self) -> None:
        await self.session.close()

    async def get(self, path: str, **params: str) -> Page:
        async with self.session.get(self.root + path, params=params or None) as response:
            return Page(
                response.status, str(response.url), await response.text(), dict(response.headers)
            )

    async def post(self, path: str, form: Any, with_csrf: bool = True) -> Page:
        data = aiohttp.FormData()
        if with_csrf:
            data.add_field("csrf", self.csrf)
        items = form.items() if isinstance(form, dict) else form
        for key, value in items:
            data.add_field(key, value)
        async with self.session.post(self.root + path, data=data) as response:
            text = await response.text()
            found = _CSRF.search(text)
            if found and "/ui/signin" not in str(response.url):
                self.csrf = found.group(1)
            return Page(response.status, str(response.url), text, dict(response.headers))

    async def sign_in(self, user_secret: str, organization_secret: str) -> Page:
        page = await self.get("/ui/signin")
        self.csrf = csrf_of(page.text)
        answer = await self.post(
            "/ui/signin",
            {"user_secret": user_secret, "organization_secret": organization_secret},
        )
        if answer.status == 200 and answer.url.endswith("/ui/instances"):
            self.csrf = csrf_of(answer.text)
        return answer


def instance_form(
    name: str, callback: str, resources: list[str], **extra: str
) -> list[tuple[str, str]]:
    fields = [
        ("name", name),
        ("events_enabled", "on"),
        ("vendor_type", "polling"),
        ("callback_url", callback),
        ("signature_key", ""),
        ("refresh_interval", "0.02"),
        ("tags", "Docs"),
        ("initial", "now"),
        ("timezone", "UTC"),
    ]
    fields.extend(("resources", resource) for resource in resources)
    fields.extend(extra.items())
    return fields
