"""The threads one training run uses for heavy work beside its event loop.

Forward passes of a CNN, vectorised environment steps, building those environments and copying frames
and weights take whole cores on a small machine. When they share the loop's priority, the loop waits for
a core each time it wakes and the host's loop lag grows with it. These threads run ``nice`` steps below
the loop's thread, so the loop gets a core first; they still use every cycle the loop leaves. Threads
started from them inherit it (ale-py's emulator threads, torch's intra-op threads). Per-thread
priority is Linux's; elsewhere the threads run at the loop's.

Each run owns its pool and ends it when the run closes, so a closed trainer leaves no thread behind
(a process-wide pool shared by trainers did, when one of them never released it).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

#: how long ``aclose`` waits for work still running (a forward pass, an env step) before it gives up
CLOSE_TIMEOUT = 10.0


async def undone_if_cancelled(call: Awaitable[T], undo: Callable[[T], object]) -> T:
    """Await ``call``, a call running in a thread, which a cancel does not stop. Cancelled, this returns at
    once and hands the call's result to ``undo`` when the thread is done with it (a segment it made, a slot it
    was writing), so nothing is used or leaked behind the caller's back."""
    running = asyncio.ensure_future(call)
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        def finished(done: asyncio.Future) -> None:
            if not done.cancelled() and done.exception() is None:
                undo(done.result())
        running.add_done_callback(finished)
        raise


def in_thread(work: WorkThreads | None) -> Callable[..., Awaitable[Any]]:
    """How a part given ``work`` (or None, outside a run: asyncio's default threads) runs a call off the loop."""
    return work.run if work is not None else asyncio.to_thread


class WorkThreads:
    """A thread pool below the loop's priority, owned by one run: ``run`` as ``asyncio.to_thread``."""

    def __init__(self, nice: int = 10, name: str = "asynca3c-work", close_timeout: float = CLOSE_TIMEOUT):
        if not 0 <= nice <= 19:
            raise ValueError(f"nice must be in 0..19 (a niceness added to the loop's), got {nice!r}")
        self.nice, self.close_timeout = nice, close_timeout
        self._threads: list[threading.Thread] = []
        self._lower = nice > 0 and sys.platform.startswith("linux")
        self._pool = ThreadPoolExecutor(thread_name_prefix=name, initializer=self._started)
        self._closed = False

    def _started(self) -> None:
        """Each pool thread, once at its start: lower this thread's priority (on Linux ``PRIO_PROCESS``
        with who=0 names the calling thread)."""
        self._threads.append(threading.current_thread())
        if not self._lower:
            return
        try:
            os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) + self.nice)
        except OSError:
            pass  # not permitted here: run at the loop's priority

    async def run(self, fn: Callable[..., T], *args) -> T:
        """``fn(*args)`` in one of the threads."""
        if self._closed:
            raise RuntimeError("these work threads are closed (the run ended)")
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args))

    async def aclose(self) -> None:
        """Let the pool's threads end, waiting up to ``close_timeout`` for work still running in them; later
        ``run`` calls are refused. Work queued but not started is dropped."""
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + self.close_timeout
        while True:
            # the pool's own set also holds a thread whose initializer has not run yet
            busy = [t for t in {*self._threads, *getattr(self._pool, "_threads", ())} if t.is_alive()]
            if not busy:
                return
            if time.monotonic() >= deadline:
                log.warning("%d work thread(s) still busy %.3g s after the run closed (a blocked environment "
                            "step?); they end when their call returns", len(busy), self.close_timeout)
                return
            await asyncio.sleep(0.01)
