"""Background threads run below the event loop's priority, and threads they start inherit it."""

from __future__ import annotations

import asyncio
import os
import sys
import threading

import pytest

from asynca3c.runtime import background

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priority is Linux's")


def nice_of_this_thread() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)  # on Linux, the calling thread's


def test_work_runs_below_the_loops_priority_and_so_do_threads_it_starts():
    def work():
        seen = {}
        child = threading.Thread(target=lambda: seen.update(child=nice_of_this_thread()))
        child.start()
        child.join()
        return nice_of_this_thread(), seen["child"]

    async def main():
        background.acquire()
        try:
            return nice_of_this_thread(), await background.run(work), nice_of_this_thread()
        finally:
            await background.release()

    loop_before, (worker, child), loop_after = asyncio.run(main())
    assert not [t for t in threading.enumerate() if t.name.startswith("asynca3c-background")]  # released: ended
    assert loop_before == loop_after  # the loop's thread is untouched
    assert worker == child == min(19, loop_before + background.NICE)
