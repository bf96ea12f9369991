"""A service on its own event loop, in its own thread (the dispatcher's, issue 17).

Why: detection and delivery shared one event loop, so a detection burst (thousands of objects
decoded, diffed and committed in long synchronous stretches) held every delivery off for as
long as it ran: deliveries almost stopped while detection ran. Yield points in detection would
bound each stretch but every new long loop would have to remember them. On a loop of its own,
the dispatcher is scheduled by the interpreter instead: a thread waiting for the GIL gets it
within the switch interval (5 ms) of any pure-Python stretch, however long detection's is, so
delivery keeps its share of the process without detection's cooperation. The price: the
service builds its own resources inside the thread (a pool is bound to its loop), e.g. its own
few database connections.

`ThreadedService(name, build)` is a Service (`run(stop)`) to the supervisor: `build()` is an
async context manager, entered on the thread's loop, that yields the inner service; `stop`
reaches the inner service's own stop event through `call_soon_threadsafe`; the inner service's
failure is this service's failure; cancelling `run` (the supervisor's grace expired) cancels
the inner service and waits for the thread to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol


class Inner(Protocol):
    name: str

    async def run(self, stop: asyncio.Event) -> None: ...


Build = Callable[[], AbstractAsyncContextManager[Inner]]
JOIN_TIMEOUT_S = 1.0


class ThreadedService:
    """Runs `build()`'s service on a new event loop in a thread of its own (module doc)."""

    def __init__(
        self, name: str, build: Build, companions: Callable[[], list[Inner]] | None = None
    ) -> None:
        """`companions()`: services run beside the built one on the thread's loop, stopped
        with it, whose failures are not its own (e.g. a lag probe of that loop)."""
        self.name = name
        self.build = build
        self.companions = companions
        self.thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._main: asyncio.Task[None] | None = None
        self._started = threading.Event()
        self.inner: Inner | None = None  # the service built in the thread, while it runs

    async def run(self, stop: asyncio.Event) -> None:
        outer = asyncio.get_running_loop()
        finished: asyncio.Future[None] = outer.create_future()

        def settle(error: BaseException | None) -> None:
            if finished.done():
                return
            if error is None:
                finished.set_result(None)
            else:
                finished.set_exception(error)

        def main() -> None:
            error: BaseException | None = None
            try:
                asyncio.run(self._inner())
            except BaseException as exc:  # handed to the supervisor's task, as its failure
                error = exc
            finally:
                self._started.set()
                with contextlib.suppress(RuntimeError):  # the outer loop is gone already
                    outer.call_soon_threadsafe(settle, error)

        self.thread = threading.Thread(target=main, name=f"service:{self.name}", daemon=True)
        self.thread.start()
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((finished, stopping), return_when=asyncio.FIRST_COMPLETED)
            self._signal(cancel=False)
            await asyncio.shield(finished)
        except asyncio.CancelledError:
            self._signal(cancel=True)
            with contextlib.suppress(BaseException):  # its outcome is the cancellation now
                await asyncio.shield(finished)
            self.thread.join(JOIN_TIMEOUT_S)  # it has settled `finished`: only its exit is left
            raise
        finally:
            stopping.cancel()

    async def _inner(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._main = asyncio.current_task()
        self._started.set()
        stop = self._stop
        beside = self.companions() if self.companions is not None else []
        async with self.build() as service:
            self.inner = service
            tasks = [asyncio.create_task(c.run(stop), name=c.name) for c in beside]
            try:
                await service.run(stop)
            finally:
                self.inner = None
                stop.set()  # the companions end with the service; theirs is not its outcome
                await asyncio.gather(*tasks, return_exceptions=True)

    def _signal(self, *, cancel: bool) -> None:
        """Tell the thread's loop to stop (or to cancel its service)."""
        self._started.wait()
        loop, stop, main = self._loop, self._stop, self._main
        if loop is None or stop is None or main is None:
            return
        with contextlib.suppress(RuntimeError):  # that loop has closed: nothing left to tell
            loop.call_soon_threadsafe(main.cancel if cancel else stop.set)


__all__ = ["ThreadedService"]
