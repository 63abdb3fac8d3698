"""The learner's and shards' worker processes: how one starts (``spawn_worker``), the wire format of its
pipes (frames of an 8-byte little-endian length, then a pickle), and how its errors and its end are told
across them.

A module of its own so the parent can import it without importing the worker's
``-m`` entry module (runpy warns when that module is already in sys.modules).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading

HEADER = struct.Struct("<Q")


def encode_frame(obj) -> bytes:
    """One frame: the pickle's length, then the pickle."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


def write_frame(stream, obj) -> None:
    stream.write(encode_frame(obj))
    stream.flush()


def read_frame(stream):
    """The next object, or None at end of input."""
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (size,) = HEADER.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


async def read_frame_async(reader):
    """The next object from an ``asyncio.StreamReader``, or None at end of input."""
    try:
        (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
        return pickle.loads(await reader.readexactly(size))
    except asyncio.IncompleteReadError:
        return None


class WorkerProcess:
    """A worker process and asyncio streams on its pipes: the parts of ``asyncio.subprocess.Process`` that the
    learner and shard clients use."""

    def __init__(self, popen: subprocess.Popen, stdin: asyncio.StreamWriter, stdout: asyncio.StreamReader,
                 stdout_transport: asyncio.ReadTransport):
        self._popen, self.stdin, self.stdout = popen, stdin, stdout
        self._stdout_transport = stdout_transport

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """None while it runs; its exit status once it has ended (reaped here)."""
        return self._popen.poll()

    def kill(self) -> None:
        """SIGKILL it (reaped by ``wait``, or by ``reap_in_background`` for callers that will not wait)."""
        if self._popen.poll() is None:
            self._popen.kill()

    def reap_in_background(self) -> None:
        """Reap it from a short-lived thread once it has ended (after ``kill``): no zombie, no wait here.
        ``returncode`` stays None for a moment after the process is gone, until that thread records it."""
        _reap_in_background(self._popen)

    def close_pipes(self) -> None:
        """Close both pipes (idempotent): once the worker has ended, what it wrote and nobody read is dropped."""
        self.stdin.close()
        self._stdout_transport.close()

    async def wait(self) -> int:
        """Its exit status, once it has ended (polled: no child watcher needed on any loop)."""
        pause = 0.002
        while (code := self._popen.poll()) is None:
            await asyncio.sleep(pause)
            pause = min(2 * pause, 0.05)
        return code


def _loop_closes_pipes(loop: asyncio.AbstractEventLoop) -> bool:
    """uvloop's pipe transports close the descriptor themselves; asyncio's leave that to the file object."""
    return type(loop).__module__.startswith("uvloop")


def pipe_file(fd: int, mode: str):
    """A file object on ``fd`` for ``connect_read_pipe``/``connect_write_pipe`` on the running loop that
    closes ``fd`` exactly once: under uvloop it leaves the descriptor to the transport (closing it again
    could close a descriptor another thread has just been given)."""
    closefd = not _loop_closes_pipes(asyncio.get_running_loop())
    return os.fdopen(fd, mode, buffering=0, closefd=closefd)


def _reap_in_background(popen: subprocess.Popen) -> None:
    if popen.poll() is None:
        threading.Thread(target=popen.wait, name="asynca3c-reap", daemon=True).start()


def _close_fds(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _start(module: str) -> tuple[subprocess.Popen, int, int]:
    """In a thread: the worker, and this process's ends of its pipes (write to its stdin, read its stdout)."""
    child_in, to_child = os.pipe()  # both close-on-exec; Popen dups the child's ends onto its 0 and 1
    try:
        from_child, child_out = os.pipe()
    except BaseException:
        _close_fds(child_in, to_child)
        raise
    try:
        popen = subprocess.Popen([sys.executable, "-m", module], stdin=child_in, stdout=child_out,
                                 start_new_session=True)
    except BaseException:
        _close_fds(to_child, from_child)
        raise
    finally:
        _close_fds(child_in, child_out)
    return popen, to_child, from_child


def _kill_if_started(started: asyncio.Future) -> None:
    """A start whose caller was cancelled: the worker it made, if any, is killed, reaped and its pipes closed."""
    if started.cancelled() or started.exception() is not None:
        return
    popen, to_child, from_child = started.result()
    popen.kill()
    _close_fds(to_child, from_child)
    _reap_in_background(popen)


async def spawn_worker(module: str) -> WorkerProcess:
    """``python -m module`` in a session of its own, with pipes on its stdin and stdout.

    Started from a thread: uvloop forks the whole parent on the loop's thread, which with torch loaded
    stalled the loop for 50-90 ms; ``subprocess`` in a thread uses vfork and keeps the loop free. A session
    of its own: a terminal's Ctrl-C or a SIGTERM to the parent's process group is the parent's to handle
    (it closes the worker's input); it must not kill the worker behind its back.
    """
    # an executor future, not a task: a runner shutting down cancels tasks, and this start must be undone
    started = asyncio.get_running_loop().run_in_executor(None, _start, module)
    try:
        popen, to_child, from_child = await asyncio.shield(started)
    except asyncio.CancelledError:
        started.add_done_callback(_kill_if_started)  # the thread finishes the start; then it is undone
        raise
    loop = asyncio.get_running_loop()
    stdout = asyncio.StreamReader(limit=1 << 20)
    read_file, write_file = pipe_file(from_child, "rb"), pipe_file(to_child, "wb")
    owns_fd = read_file.closefd  # False under uvloop, whose transports close the descriptors
    stdout_transport = None
    handed: set[int] = set()  # descriptors given to the loop: under uvloop, from then on only it closes them
    try:
        handed.add(from_child)
        stdout_transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdout), read_file)
        handed.add(to_child)
        transport, protocol = await loop.connect_write_pipe(
            lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), write_file)
    except BaseException:
        popen.kill()
        _reap_in_background(popen)
        if stdout_transport is not None:
            stdout_transport.close()
        for file, fd in ((read_file, from_child), (write_file, to_child)):
            file.close()  # closes fd under asyncio (a second close of a closed file object does nothing)
            if not owns_fd and fd not in handed:
                _close_fds(fd)
        raise
    return WorkerProcess(popen, asyncio.StreamWriter(transport, protocol, None, loop), stdout, stdout_transport)


def portable(exc: BaseException) -> BaseException:
    """The exception itself when it survives pickling (a worker sends it back), else a RuntimeError with its
    text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def exit_status(code: int | None) -> str:
    """How a worker process ended: 'signal 9, SIGKILL' or 'exit code 1'."""
    if code is not None and code < 0:
        try:
            return f"signal {-code}, {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


async def close_worker(proc: WorkerProcess, goodbye: bytes = b"", grace: float = 5.0) -> None:
    """End a worker process spoken to over its stdin: write ``goodbye`` (a last frame), close its input,
    wait up to ``grace`` seconds for it to exit, then kill it. Cancelled, it kills it at once."""
    try:
        if proc.returncode is None:
            try:
                assert proc.stdin is not None  # started with a stdin pipe
                if goodbye:
                    proc.stdin.write(goodbye)
                proc.stdin.close()
            except (ConnectionError, RuntimeError):
                pass
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    except asyncio.CancelledError:
        proc.kill()
        proc.reap_in_background()
        raise
    finally:
        proc.close_pipes()
