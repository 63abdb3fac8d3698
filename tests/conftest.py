"""Fixtures for every layer's tests: the event loop (each async test runs on asyncio and on uvloop),
the ``asynca3c`` command as users run it, and the check that a run left nothing behind."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import pytest
import uvloop

CLI = [sys.executable, "-m", "asynca3c.cli"]


@pytest.fixture(params=[asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def loop_factory(request) -> Callable[[], asyncio.AbstractEventLoop]:
    """A host's loop: the test runs once on asyncio's and once on uvloop's."""
    return request.param


@pytest.fixture
def run_on(loop_factory) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """Runs a coroutine to completion on a fresh loop of ``loop_factory``'s kind."""

    def run(coro):
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(coro)

    return run


@pytest.fixture
def cli_command() -> list[str]:
    """argv that starts the ``asynca3c`` command in a fresh interpreter."""
    return list(CLI)


def _run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess]:
    """Runs ``asynca3c ARGS...`` as a user would; returns the finished process (text output)."""
    return _run_cli


def _assert_one_line_error(done: subprocess.CompletedProcess, *needles: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and all(n in lines[0] for n in needles), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


@pytest.fixture
def assert_one_line_error() -> Callable[..., str]:
    """Exit status 2 and exactly one stderr line, holding every needle, no traceback; returns the line."""
    return _assert_one_line_error


async def until(condition: Callable[[], Any], seconds: float = 30.0) -> bool:
    """Whether ``condition()`` came true within ``seconds`` (polled every 50 ms)."""
    for _ in range(int(seconds / 0.05)):
        if condition():
            return True
        await asyncio.sleep(0.05)
    return bool(condition())


def shm_segments() -> set[str]:
    """This package's shared-memory segments that this test process answers for: its own, its descendants',
    and any whose maker is gone (a leak). Segments of other live processes are left out: another
    pytest-xdist worker's runs make and unlink theirs meanwhile."""
    from asynca3c.runtime import shm

    if not os.path.isdir("/dev/shm"):
        return set()
    return {n for n in os.listdir("/dev/shm") if n.startswith(shm.PREFIX) and _answered_for(shm.maker_pid(n))}


def _answered_for(maker: int | None) -> bool:
    if maker is None or not process_alive(maker):  # not named by its maker, or the maker is gone: a leak
        return True
    me, pid = os.getpid(), maker
    while pid is not None and pid > 1:
        if pid == me:
            return True
        pid = parent_pid(pid)
    return False


def parent_pid(pid: int) -> int | None:
    """``pid``'s parent, from /proc (zombies included); None if it cannot be read (gone, or not Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])  # after the command name, which may hold spaces
    except (OSError, ValueError, IndexError):
        return None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _assert_nothing_left(pid: int | None = None) -> None:
    if pid is not None:
        assert not process_alive(pid)
    deadline = time.monotonic() + 5
    while threading.active_count() > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.enumerate() == [threading.main_thread()]


@pytest.fixture
def assert_nothing_left() -> Callable[[int | None], None]:
    """No learner process (``pid``), and no thread but the main one (executor threads exit within seconds)."""
    return _assert_nothing_left


def make_random_segment(T: int, E: int, seed: int = 0):
    """A [T, E] segment of a 4-feature, 2-action env: random observations, actions and rewards, every step
    valid, a uniform behaviour policy; for learner tests that need data, not an environment."""
    from asynca3c.core.messages import Segment
    rng = np.random.default_rng(seed)
    seg = Segment.empty(T, E, 4, (), np.int64)
    seg.obs[:] = rng.normal(size=seg.obs.shape)
    seg.action[:] = rng.integers(0, 2, size=(T, E))
    seg.reward[:] = rng.normal(size=(T, E))
    seg.valid[:] = True
    seg.behaviour_logp[:] = np.log(0.5)
    return seg


@pytest.fixture
def random_segment() -> Callable[..., Any]:
    return make_random_segment
