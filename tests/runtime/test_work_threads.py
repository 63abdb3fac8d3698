"""A run's work threads: below the loop's priority (threads they start too), and gone when the run closes."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading

import pytest
from pixel_env import register

from asynca3c import Config, Trainer
from asynca3c.runtime.work_threads import WorkThreads

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priority is Linux's")


def nice_of_this_thread() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)  # on Linux, the calling thread's


def work_threads_alive() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("asynca3c-work")]


@linux_only
def test_work_runs_below_the_loop_and_threads_it_starts_inherit_it(run_on, assert_nothing_left):
    def work():
        seen = {}
        child = threading.Thread(target=lambda: seen.update(child=nice_of_this_thread()))
        child.start()
        child.join()
        return nice_of_this_thread(), seen["child"]

    async def main():
        threads = WorkThreads(nice=7)
        try:
            return nice_of_this_thread(), await threads.run(work), nice_of_this_thread()
        finally:
            await threads.aclose()

    loop_before, (worker, child), loop_after = run_on(main())
    assert loop_before == loop_after  # the loop's thread is untouched
    assert worker == child == min(19, loop_before + 7)
    assert not work_threads_alive()  # closed: ended, not left for the interpreter's exit
    assert_nothing_left()


def test_nice_zero_keeps_the_loops_priority_and_bad_values_are_refused(run_on):
    async def main():
        threads = WorkThreads(nice=0)
        try:
            return nice_of_this_thread(), await threads.run(nice_of_this_thread)
        finally:
            await threads.aclose()

    loop, worker = run_on(main())
    assert worker == loop
    with pytest.raises(ValueError, match=r"nice must be in 0\.\.19 .*got 20"):
        WorkThreads(nice=20)


def test_a_closed_pool_refuses_work_and_a_blocked_call_does_not_hang_close(run_on, caplog):
    release = threading.Event()

    async def main():
        threads = WorkThreads(close_timeout=0.2)
        blocked = asyncio.ensure_future(threads.run(release.wait))
        await asyncio.sleep(0.05)  # it is running in a thread now
        with caplog.at_level(logging.WARNING, logger="asynca3c.runtime.work_threads"):
            await threads.aclose()  # returns after close_timeout although the call still runs
        assert not blocked.done()
        with pytest.raises(RuntimeError, match="work threads are closed"):
            await threads.run(print)
        release.set()
        return await blocked

    assert run_on(main()) is True
    assert "1 work thread(s) still busy" in caplog.text


@linux_only
def test_a_pixel_run_acts_in_lowered_threads_and_leaves_none_behind(run_on, assert_nothing_left):
    cfg = Config(env=register(), encoder="a3c", agents=1, envs_per_agent=4, segment_length=8, batch_envs=4,
                 eval_envs=0, final_eval_episodes=0, seconds=60, work_nice=5)

    async def main():
        seen: dict[str, int] = {}
        async with Trainer(cfg) as trainer:
            loop_nice = nice_of_this_thread()
            for _ in range(600):  # until forward passes (a CNN's: off the loop) and updates have run
                if trainer.snapshot()["updates"] >= 5:
                    break
                await asyncio.sleep(0.05)
            for t in work_threads_alive():
                seen[t.name] = os.getpriority(os.PRIO_PROCESS, t.native_id)
            await trainer.stop()
        return loop_nice, seen

    loop_nice, seen = run_on(main())
    assert seen and set(seen.values()) == {min(19, loop_nice + 5)}, seen
    assert not work_threads_alive()
    assert_nothing_left()
