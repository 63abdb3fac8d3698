"""An acting shard's worker process: ``python -m asynca3c.runtime.shard_worker``.

The parent (``shard_client.ProcessShard``) is the only peer. Frames
(``asynca3c.runtime.wire``) in on stdin: first ``("init", sys_path, spec)``
with the pickled ``ShardSpec`` (unpickled only once the parent's import path
is known, so an env factory from the host's modules loads here too), then
``("weights", version, arrays)`` or ``("shared-weights", version, packed)``
(answered by ``("weights-read", slot)``, see ``shard_weights``),
``("release", slot)`` and ``("stop",)``.
Frames out on stdout: ``("ready",)``, then ``("msg", message, report, ref)``
for each message of the agents (``ref``: the shared-memory slot that holds a
segment's frames, which then travel without them, see ``shard_frames``; or
None), ``("report", report)`` every ``BEAT`` seconds (the parent takes a long
silence for a hang), and last ``("stopped", report)`` or
``("error", exception, traceback, report)``. The shard runs on uvloop; the
output pipe's writes wait until the pipe has taken them (the parent reads it
only when its queue has room), so a full queue in the trainer holds the
agents back here as it does on the trainer's loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pickle
import signal
import sys
import traceback
from typing import Any

from asynca3c.core.messages import Segment
from asynca3c.runtime.shard import Shard, ShardReport
from asynca3c.runtime.shard_frames import FrameWriter
from asynca3c.runtime.shard_weights import copy_out
from asynca3c.runtime.uvloop_runner import run_on_uvloop
from asynca3c.runtime.wire import encode_frame, pipe_file, portable, read_frame_async

#: Seconds between reports while nothing else is sent.
BEAT = 1.0


async def _pipes(in_fd: int, out_fd: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe_file(in_fd, "rb"))
    transport, protocol = await loop.connect_write_pipe(
        lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), pipe_file(out_fd, "wb"))
    transport.set_write_buffer_limits(high=0)  # drain() waits until the pipe took every byte
    return reader, asyncio.StreamWriter(transport, protocol, None, loop)


async def serve(in_fd: int, out_fd: int) -> None:
    reader, writer = await _pipes(in_fd, out_fd)

    async def send(frame: Any) -> None:
        writer.write(encode_frame(frame))
        await writer.drain()

    def post(frame: Any) -> None:  # a small frame, queued behind what is on its way, without waiting
        writer.write(encode_frame(frame))

    try:
        await _serve(reader, send, post)
    finally:
        writer.close()
        try:
            await writer.wait_closed()  # the last frame reaches the pipe before the process ends
        except (ConnectionError, BrokenPipeError):
            pass


async def _serve(reader: asyncio.StreamReader, send, post) -> None:
    first = await read_frame_async(reader)
    if first is None:
        return
    try:
        _, sys_path, blob = first
        sys.path.extend(p for p in sys_path if p not in sys.path)
        spec = pickle.loads(blob)
    except Exception as exc:
        refusal = RuntimeError(f"the shard could not load its settings and environment source: "
                               f"{type(exc).__name__}: {exc} (an env_factory must be importable by module "
                               "path in a new process)")
        await send(("error", refusal, traceback.format_exc(), ShardReport()))
        return
    try:
        os.nice(int(spec.config.get("shard_nice", 0)))
    except OSError:  # noqa: S110 - a priority the system refuses leaves this one; acting still works
        pass

    frames: FrameWriter | None = None

    async def ship(message: Any, report: ShardReport) -> None:
        ref = None
        if frames is not None and isinstance(message, Segment):
            ref = await frames.put(message.obs)
            if ref is not None:  # the frames are in the slot: the segment goes without them
                message = dataclasses.replace(message, obs=message.obs[:0])
        await send(("msg", message, report, ref))

    shard: Shard | None = None
    try:
        if spec.frames is not None:
            frames = FrameWriter(spec.frames)
        shard = Shard(spec, ship)
        await shard.start()
    except Exception as exc:
        await send(("error", portable(exc), traceback.format_exc(), ShardReport()))
        if shard is not None:
            await shard.aclose()
        if frames is not None:
            frames.close()
        return
    await send(("ready",))
    loop = asyncio.get_running_loop()
    control = loop.create_task(_control(reader, shard, frames, post), name="asynca3c-shard-control")
    beat = loop.create_task(_beat(shard, send), name="asynca3c-shard-beat")
    acting = loop.create_task(shard.run(), name="asynca3c-shard-run")
    error: BaseException | None = None
    try:
        await asyncio.wait({acting, control}, return_when=asyncio.FIRST_COMPLETED)
        if control.done() and control.exception() is not None:
            # the parent's messages (releases, stop) can no longer be read: stop acting, report why
            error = control.exception()
            if frames is not None:
                frames.stop_waiting()
            shard.stop()
        try:
            await acting
        except Exception as exc:
            if error is None:
                error = exc
            else:
                error.add_note(f"and then the shard's agents failed: {exc!r}")
    finally:
        for task in (acting, control, beat):
            task.cancel()
        await asyncio.gather(acting, control, beat, return_exceptions=True)
        await shard.aclose()
        if frames is not None:
            frames.close()
    if error is not None:
        # what happened up to the failure counts too (the fault that stopped it, the steps before it)
        await send(("error", portable(error), "".join(traceback.format_exception(error)), shard.take_report()))
    else:
        await send(("stopped", shard.take_report()))


async def _control(reader: asyncio.StreamReader, shard: Shard, frames: FrameWriter | None, post) -> None:
    """Weights (in the frame, or in the parent's shared memory: copied out, then answered), frame slots the
    parent has read, and the stop request; the parent's end of input (it closed or died) stops the shard
    too, and nothing will be released after it."""
    while True:
        frame = await read_frame_async(reader)
        if frame is None:
            if frames is not None:
                frames.stop_waiting()
            shard.stop()
            return
        if frame[0] == "release":
            assert frames is not None  # the parent releases only slots this shard wrote
            frames.release(frame[1])
        elif frame[0] == "stop":
            shard.stop()  # the parent reads on until "stopped", releasing the slots it reads
        elif frame[0] == "weights":
            shard.set_weights(frame[2], frame[1])
        elif frame[0] == "shared-weights":
            packed = frame[2]
            weights = copy_out(packed)
            post(("weights-read", packed.ref.slot))  # the slot may be reused once every shard has said so
            shard.set_weights(weights, frame[1])


async def _beat(shard: Shard, send) -> None:
    while True:
        await asyncio.sleep(BEAT)
        await send(("report", shard.take_report()))


def main() -> None:
    # A terminal's Ctrl-C reaches the whole process group: the parent decides what stopping means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out_fd = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not corrupt the frames
    run_on_uvloop(serve(sys.stdin.fileno(), out_fd))


if __name__ == "__main__":
    main()
