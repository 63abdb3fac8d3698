"""Checks that a finished or cancelled run left nothing behind (shared by the trainer tests)."""

from __future__ import annotations

import os
import threading
import time


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def assert_nothing_left(pid: int | None = None) -> None:
    """No learner process, and no thread but the main one (executor threads exit within seconds)."""
    if pid is not None:
        assert not process_alive(pid)
    deadline = time.monotonic() + 5
    while threading.active_count() > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.enumerate() == [threading.main_thread()]
