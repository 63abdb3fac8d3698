"""A private uvloop loop for synchronous callers (scripts, the CLI)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_on_uvloop(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a fresh uvloop loop (asyncio's where uvloop is missing).

    No loop policy is installed, so hosts that embed a Trainer keep whatever
    loop they run.
    """
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - platforms without uvloop
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)
