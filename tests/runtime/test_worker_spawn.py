"""Worker processes (the learner, shards) start from a thread, and every way of ending one leaves no
process (not even a zombie), no open pipe and no thread behind, on asyncio and uvloop."""

from __future__ import annotations

import asyncio
import os

from conftest import parent_pid, process_alive, until

from asynca3c.runtime.wire import close_worker, encode_frame, read_frame_async, spawn_worker


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")} if os.path.isdir("/proc/self/fd") else set()


def children() -> set[int]:
    """This process's children, zombies included (they have not been reaped)."""
    me = os.getpid()
    return {int(entry) for entry in os.listdir("/proc") if entry.isdigit() and parent_pid(int(entry)) == me}


def test_a_worker_closed_or_killed_leaves_no_process_or_descriptor(run_on, assert_nothing_left):
    async def main():
        fds = open_fds()
        worker = await spawn_worker("asynca3c.runtime.learner_worker")
        assert process_alive(worker.pid) and worker.returncode is None
        await close_worker(worker, encode_frame(("close", None)), grace=10.0)  # exits on its own
        assert worker.returncode == 0
        other = await spawn_worker("asynca3c.runtime.learner_worker")
        other.kill()
        assert await other.wait() == -9
        assert await read_frame_async(other.stdout) is None  # its end of the pipe closed with it
        await close_worker(other)
        await asyncio.sleep(0.05)  # transports finish closing on the next loop turns
        return fds, {worker.pid, other.pid}

    fds, pids = run_on(main())
    assert not any(process_alive(p) for p in pids)  # reaped: a zombie would still answer kill(pid, 0)
    assert open_fds() <= fds
    assert_nothing_left()


def test_a_start_cancelled_midway_leaves_no_process_or_descriptor(run_on, assert_nothing_left):
    async def main():
        fds, before = open_fds(), children()
        for delay in (0.0, 0.001, 0.005, 0.02):
            start = asyncio.ensure_future(spawn_worker("asynca3c.runtime.learner_worker"))
            await asyncio.sleep(delay)
            start.cancel()
            try:
                worker = await start
            except asyncio.CancelledError:
                continue
            await close_worker(worker)  # it had started before the cancel arrived
        assert await until(lambda: children() <= before, 10.0), children() - before
        await asyncio.sleep(0.05)
        return fds

    fds = run_on(main())
    assert open_fds() <= fds
    assert_nothing_left()


def test_a_close_cancelled_while_waiting_kills_and_reaps_the_worker(run_on, assert_nothing_left):
    async def main():
        before = children()
        worker = await spawn_worker("asynca3c.runtime.learner_worker")  # waits for its first frame
        closing = asyncio.ensure_future(close_worker(worker, grace=30.0))
        await asyncio.sleep(0.1)
        closing.cancel()
        try:
            await closing
        except asyncio.CancelledError:
            pass
        assert await until(lambda: children() <= before, 10.0)
        # killed (it was still importing torch), and reaped; the reaping thread records the status just
        # after the process is gone (until then Popen.poll() answers None), hence wait() and not returncode
        assert await asyncio.wait_for(worker.wait(), 5.0) == -9
        return worker.pid

    pid = run_on(main())
    assert not process_alive(pid)
    assert_nothing_left()
