"""Running the ``asynca3c`` command as users do, and the shape of its errors (shared by the CLI tests)."""

from __future__ import annotations

import subprocess
import sys

CLI = [sys.executable, "-m", "asynca3c.cli"]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(done: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit status 2 and exactly one stderr line, holding every needle, no traceback; returns the line."""
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and all(n in lines[0] for n in needles), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]
