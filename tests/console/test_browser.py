"""The console in a real browser (DESIGN §10): headless Chromium from the distribution
(Debian's `chromium` and `chromium-driver`), driven by selenium. Nothing is downloaded: the
test fails, saying what to install, when /usr/bin/chromium or /usr/bin/chromedriver is absent.

The daemon, the emulator and the callback receiver run on an event loop in a thread of their
own; the test drives the browser from the main thread. Each step leaves a screenshot in the
folder printed at the start (CONSOLE_SCREENSHOTS, or the test's tmp_path/screenshots).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from tests.api.harness import ORG_SECRET, add_user, receiver, running_daemon

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"
T = TypeVar("T")


@dataclass
class Stack:
    """What runs on the background loop, and a way to run code there."""

    loop: asyncio.AbstractEventLoop
    emu: Any
    root: str
    hook: Any
    user_secret: str

    def call(self, action: Callable[[], T]) -> T:
        """Runs a plain function on the loop's thread (the emulator is not thread-safe)."""
        done: Future[T] = Future()

        def run() -> None:
            try:
                done.set_result(action())
            except BaseException as exc:  # handed to the test's thread
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return done.result(timeout=30)


@pytest.fixture
async def stack(emu: Any, db_dsn: str, pool: Any) -> AsyncIterator[Stack]:
    """The daemon runs on the test's loop (its signal handlers need the main thread); the
    browser steps run in a worker thread and reach the loop through Stack.call."""
    emu.add_realm(seed=1, per_entity=2)
    secret = await add_user(pool, "alice")
    async with running_daemon(emu, db_dsn) as api, receiver() as hook:
        yield Stack(asyncio.get_running_loop(), emu, api.root, hook, secret)


@pytest.fixture
def browser() -> Iterator[Any]:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(
            f"the browser tests need Debian's Chromium: {', '.join(missing)} missing; "
            f"install it with `{INSTALL}`"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        "--no-first-run",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


class Steps:
    """Screenshots, numbered in the order they were taken."""

    def __init__(self, driver: Any, folder: Path) -> None:
        self.driver = driver
        self.folder = folder
        self.count = 0

    def shot(self, name: str, whole_page: bool = False) -> None:
        self.count += 1
        path = str(self.folder / f"{self.count:02d}-{name}.png")
        if not whole_page:
            self.driver.save_screenshot(path)
            return
        size = self.driver.get_window_size()
        height = self.driver.execute_script("return document.documentElement.scrollHeight;")
        self.driver.set_window_size(size["width"], int(height) + 140)
        self.driver.save_screenshot(path)
        self.driver.set_window_size(size["width"], size["height"])


def wait_for(driver: Any, condition: Callable[[Any], Any], timeout: float = 20) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)


async def test_console_flow_in_chromium(stack: Stack, browser: Any, tmp_path: Path) -> None:
    await asyncio.to_thread(console_flow, stack, browser, tmp_path)


def console_flow(stack: Stack, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    folder = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nconsole screenshots: {folder}")
    steps = Steps(browser, folder)
    find = browser.find_element

    # Sign in.
    browser.get(stack.root + "/ui/")
    assert browser.current_url.endswith("/ui/signin")
    find(By.ID, "user_secret").send_keys(stack.user_secret)
    find(By.ID, "organization_secret").send_keys(ORG_SECRET)
    steps.shot("sign-in")
    find(By.ID, "signin").click()
    wait_for(browser, lambda d: d.current_url.endswith("/ui/instances"))
    assert find(By.ID, "empty-instances").is_displayed()
    steps.shot("instances-empty")

    # Connect to the emulator (its consent page approves at once) and come back.
    find(By.LINK_TEXT, "Connect to QuickBooks and create one").click()
    find(By.ID, "connect").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "connected"))
    assert browser.current_url.endswith("/ui/instances/new")
    steps.shot("connected")

    # The instance form: three resources.
    find(By.ID, "name").send_keys("Browser books")
    find(By.ID, "callback_url").send_keys(stack.hook.url)
    interval = find(By.ID, "refresh_interval")
    interval.clear()
    interval.send_keys("0.02")
    find(By.ID, "generate-key").click()
    assert find(By.ID, "signature_key").get_attribute("value").startswith("whsec_")
    find(By.ID, "resources-none").click()
    for name in ("customers", "invoices", "vendors"):
        find(By.ID, f"resource-{name}").click()
    checked = browser.find_elements(By.CSS_SELECTOR, "input[name=resources]:checked")
    assert sorted(box.get_attribute("value") for box in checked) == [
        "customers",
        "invoices",
        "vendors",
    ]
    find(By.ID, "tags").send_keys("Docs")
    steps.shot("instance-form", whole_page=True)
    find(By.ID, "submit").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "instance-name"))
    assert find(By.ID, "instance-name").text == "Browser books"
    assert "Instance created" in browser.page_source
    instance_url = browser.current_url.split("?")[0]
    steps.shot("instance-created")

    # Wait for the baseline poll, then open the event log and mark the page: a reload
    # would lose the mark.
    def polled(driver: Any) -> bool:
        driver.refresh()
        return "Last poll</dt><dd>never" not in driver.page_source

    wait_for(browser, polled)
    find(By.ID, "event-log").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "event-rows"))
    browser.execute_script("window.consoleMark = 'no reload';")
    steps.shot("event-log-empty")

    realm = next(iter(stack.call(lambda: list(stack.emu.realms))))
    created = stack.call(
        lambda: stack.emu.create(realm, "Customer", {"DisplayName": "Live Browser Customer"})
    )
    rows = "#event-rows tr[data-id]"
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, rows), timeout=30)
    assert browser.execute_script("return window.consoleMark;") == "no reload"
    first = find(By.CSS_SELECTOR, rows)
    assert "CREATED" in first.text and created["Id"] in first.text
    wait_for(browser, lambda d: "NOTIFIED" in d.find_element(By.CSS_SELECTOR, rows).text)
    steps.shot("event-log-live")

    # The event: payload and delivery attempt.
    first = find(By.CSS_SELECTOR, rows)
    first.find_element(By.TAG_NAME, "a").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "payload"))
    assert "Live Browser Customer" in find(By.ID, "payload").text
    attempts = find(By.ID, "attempts").text
    assert "200" in attempts
    steps.shot("event-detail")

    # The receiver fails: the next event becomes a dead letter; redeliver it from Deliveries.
    stack.call(lambda: setattr(stack.hook, "respond", lambda _r: web.Response(status=500)))
    stack.call(lambda: stack.emu.create(realm, "Vendor", {"DisplayName": "Failing Vendor"}))

    def dead_listed(driver: Any) -> bool:
        driver.get(stack.root + "/ui/deliveries")
        return bool(driver.find_elements(By.CSS_SELECTOR, "#deliveries tbody tr"))

    wait_for(browser, dead_listed, timeout=40)
    assert "dead" in find(By.ID, "deliveries").text
    steps.shot("deliveries-dead")
    received_before = stack.call(lambda: len(stack.hook.requests))
    stack.call(lambda: setattr(stack.hook, "respond", lambda _r: web.Response(text="ok")))
    find(By.CSS_SELECTOR, "button[data-check=delivery]").click()
    find(By.ID, "redeliver-selected").click()
    wait_for(browser, lambda d: "Redelivery queued" in d.page_source)

    def emptied(driver: Any) -> bool:
        driver.get(stack.root + "/ui/deliveries")
        return bool(driver.find_elements(By.ID, "no-deliveries"))

    wait_for(browser, emptied, timeout=30)
    assert stack.call(lambda: len(stack.hook.requests)) > received_before
    last = stack.call(lambda: stack.hook.requests[-1].body)
    assert b"Failing Vendor" in last
    steps.shot("deliveries-redelivered")

    # Pause and resume.
    browser.get(instance_url)
    find(By.ID, "pause").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "resume"))
    assert find(By.ID, "instance-status").text == "paused"
    steps.shot("paused")
    find(By.ID, "resume").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "pause"))
    assert find(By.ID, "instance-status").text == "active"

    # Delete, with the confirmation step.
    find(By.ID, "delete").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "confirm_name"))
    find(By.ID, "confirm_name").send_keys("Browser books")
    steps.shot("delete-confirm")
    find(By.ID, "confirm-delete").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "empty-instances"))
    assert "Instance deleted" in browser.page_source
    steps.shot("deleted")


async def test_script_in_a_name_stays_text_in_chromium(stack: Stack, browser: Any) -> None:
    """The security test in the browser: the name shows as typed and runs nothing."""
    await asyncio.to_thread(hostile_name, stack, browser)


def hostile_name(stack: Stack, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(stack.root + "/ui/signin")
    browser.find_element(By.ID, "user_secret").send_keys(stack.user_secret)
    browser.find_element(By.ID, "organization_secret").send_keys(ORG_SECRET)
    browser.find_element(By.ID, "signin").click()
    # The sign-in POST must land (its cookie set) before the next page is asked for: a `get`
    # right after the click can cancel it, and the form page then redirects to /ui/signin.
    wait_for(browser, lambda d: d.current_url.endswith("/ui/instances"))
    browser.get(stack.root + "/ui/instances/new")
    browser.find_element(By.ID, "connect").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "connected"))
    hostile = "<script>window.pwned=1</script><img src=x onerror=window.pwned=2>"
    browser.find_element(By.ID, "name").send_keys(hostile)
    browser.find_element(By.ID, "callback_url").send_keys(stack.hook.url)
    browser.find_element(By.ID, "submit").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "instance-name"))
    assert browser.find_element(By.ID, "instance-name").text == hostile
    assert browser.execute_script("return window.pwned === undefined;")
    browser.get(stack.root + "/ui/instances")
    assert hostile in browser.find_element(By.ID, "instances").text
    assert browser.execute_script("return window.pwned === undefined;")


async def test_field_changes_in_chromium(stack: Stack, browser: Any, tmp_path: Path) -> None:
    """DESIGN §12 in the browser: the form's Field changes box, then an event's changes."""
    await asyncio.to_thread(field_changes, stack, browser, tmp_path)


def field_changes(stack: Stack, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    find = browser.find_element
    browser.get(stack.root + "/ui/signin")
    find(By.ID, "user_secret").send_keys(stack.user_secret)
    find(By.ID, "organization_secret").send_keys(ORG_SECRET)
    find(By.ID, "signin").click()
    wait_for(browser, lambda d: d.current_url.endswith("/ui/instances"))  # as in hostile_name
    browser.get(stack.root + "/ui/instances/new")
    find(By.ID, "connect").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "connected"))
    find(By.ID, "name").send_keys("Diffs")
    find(By.ID, "callback_url").send_keys(stack.hook.url)
    interval = find(By.ID, "refresh_interval")
    interval.clear()
    interval.send_keys("0.02")
    find(By.ID, "resources-none").click()
    find(By.ID, "resource-customers").click()
    find(By.CSS_SELECTOR, "details summary").click()  # the options beyond Open Connectors'
    find(By.ID, "changes").click()
    find(By.ID, "submit").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "instance-name"))

    def polled(driver: Any) -> bool:
        driver.refresh()
        return "Last poll</dt><dd>never" not in driver.page_source

    wait_for(browser, polled)
    realm = next(iter(stack.call(lambda: list(stack.emu.realms))))
    cid = stack.call(lambda: stack.emu.ids(realm, "Customer", include_inactive=False)[0])
    find(By.ID, "event-log").click()
    rows = "#event-rows tr[data-id]"
    stack.call(lambda: stack.emu.update(realm, "Customer", {"Id": cid, "Notes": "before"}))
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, rows)) == 1, timeout=30)
    stack.call(lambda: stack.emu.update(realm, "Customer", {"Id": cid, "Notes": "after"}))
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, rows)) == 2, timeout=30)
    find(By.CSS_SELECTOR, rows).find_element(By.TAG_NAME, "a").click()  # the newest
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "table.changes"))
    cells = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "table.changes tbody td")]
    assert cells == ["/Notes", '"before"', '"after"']
    folder = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(folder / "field-changes.png"))
