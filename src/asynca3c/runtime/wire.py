"""The wire format of the learner and shard pipes: frames of an 8-byte little-endian length, then a pickle;
and how a worker's errors and its end are told across them.

A module of its own so the parent can import it without importing the worker's
``-m`` entry module (runpy warns when that module is already in sys.modules).
"""

from __future__ import annotations

import asyncio
import pickle
import signal
import struct

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


async def close_worker(proc: asyncio.subprocess.Process, goodbye: bytes = b"", grace: float = 5.0) -> None:
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
        if proc.returncode is None:
            proc.kill()
        raise
