"""Threads for the trainer's heavy work beside the event loop: forward passes, environment steps and their
construction, copies of frames and weights.

On a machine whose cores this work fills (pixels on 2 cores), the loop's thread waits for a core each time
it wakes, and the host's loop lag grows with it. These threads run at a lower scheduling priority (nice +10)
than the loop's, so the loop gets a core first when it has something to do; the threads still use every
cycle the loop leaves. Threads they start inherit the priority (ale-py's emulator threads, made while an
environment is built here). Per-thread priority is Linux's; elsewhere the threads run at the loop's.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

#: how much lower than the loop's thread these threads run (a nice increment)
NICE = 10

T = TypeVar("T")
_pool: ThreadPoolExecutor | None = None
_users = 0  # trainers running in this process: the pool is shut down when the last one closes


def _lower_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) + NICE)  # this thread only, on Linux
    except OSError:
        pass  # not permitted here: run at the loop's priority


def executor() -> ThreadPoolExecutor:
    """The process's pool of background threads (made on first use, shared by every trainer)."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(thread_name_prefix="asynca3c-background",
                                   initializer=_lower_priority if sys.platform.startswith("linux") else None)
    return _pool


def acquire() -> None:
    """A trainer starts using the pool (pair with ``release``)."""
    global _users
    _users += 1


async def release() -> None:
    """A trainer is done with the pool; the last one shuts it down and waits for its threads to end, so a
    closed trainer leaves no thread behind."""
    global _users, _pool
    _users = max(0, _users - 1)
    if _users == 0 and _pool is not None:
        pool, _pool = _pool, None
        await asyncio.get_running_loop().run_in_executor(None, pool.shutdown, True)


async def run(fn: Callable[..., T], *args) -> T:
    """``fn(*args)`` in a background thread; as ``asyncio.to_thread``, at a lower priority than the loop."""
    return await asyncio.get_running_loop().run_in_executor(executor(), functools.partial(fn, *args))
