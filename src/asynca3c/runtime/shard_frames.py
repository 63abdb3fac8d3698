"""Segments' frames from process shards through shared memory, not through their pipes.

The trainer owns one ring of slots (``FrameRing``), split among its process shards: each shard gets a
writer grant of its own slots (``shm.SlotRing.writer_grants``) and keeps it across its restarts. A shard
copies a segment's observations into one of its slots (``FrameWriter.put``) and ships the segment without
them, with the slot's handle; the trainer copies them out as it reads the segment (``FrameRing.take``) and
sends the slot's release back. The trainer never holds a slot past reading it, so a restarted shard may
begin with its whole grant free: what a dead shard had claimed was never read, and never will be.

A shard whose slots are all claimed waits for a release: the trainer reads a shard only when its queue
has room, so this is the same back-pressure the pipe gave when frames went through it. Ray shards (other
machines) send their arrays through Ray's object store instead.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np

from asynca3c.runtime import shm

#: A segment's frames smaller than this go through the pipe: a copy into a slot saves nothing there
#: (vector observations, small images). An Atari segment of 16 envs and 5 steps is about 2.7 MB.
MIN_BYTES = 1 << 20
#: Slots per shard: segments on their way while the trainer reads the one before.
SLOTS_PER_SHARD = 4


def segment_frame_bytes(segment_length: int, envs_per_agent: int, obs_shape: tuple[int, ...], dtype) -> int:
    """Bytes of one agent's segment of observations: ``segment_length + 1`` rows of ``envs_per_agent``."""
    return (segment_length + 1) * envs_per_agent * math.prod(obs_shape) * np.dtype(dtype).itemsize


class FrameRing:
    """The trainer's side: the ring its process shards write frames into, and what crossed it."""

    def __init__(self, shards: int, slot_bytes: int, slots_per_shard: int = SLOTS_PER_SHARD):
        self._ring = shm.SlotRing(shards * slots_per_shard, slot_bytes)
        self._grants = self._ring.writer_grants(shards)
        self._writer_of = [shard for shard, grant in enumerate(self._grants) for _ in grant.slots]
        self.bytes = 0  # frames copied out of slots
        self.segments_by_shard = [0] * shards

    @classmethod
    def for_shards(cls, shards: int, frame_bytes: int) -> FrameRing | None:
        """A ring for ``shards`` process shards whose segments' frames take ``frame_bytes``; None where the
        pipe will do (small frames, no POSIX shared memory, or none to be had: a warning says so once)."""
        if shards < 1 or frame_bytes < MIN_BYTES or not shm.AVAILABLE:
            return None
        try:
            return cls(shards, frame_bytes)
        except OSError as e:
            shm.warn_no_segment("the shards' frames", e)
            return None

    @property
    def segments(self) -> int:
        """Segments whose frames came through the ring, all shards together."""
        return sum(self.segments_by_shard)

    def grant(self, shard: int) -> shm.WriterGrant:
        """Shard ``shard``'s slots (the same after each restart)."""
        return self._grants[shard]

    def take(self, ref: shm.SlotRef) -> np.ndarray:
        """A copy of the frames behind ``ref``; the caller then sends the slot's release to its writer."""
        frames = self._ring.view(ref).copy()
        self.bytes += frames.nbytes
        self.segments_by_shard[self._writer_of[ref.slot]] += 1
        return frames

    def close(self) -> None:
        """Unlinks the ring (idempotent); shards still attached keep their mapping until they exit."""
        self._ring.close()


class FrameWriter:
    """A shard's side: its grant's slots, and the wait for one to be released."""

    def __init__(self, grant: shm.WriterGrant):
        self._writer = shm.SlotWriter(grant)
        self._released = asyncio.Event()
        self._open = True
        self.inline = 0  # segments whose frames went through the pipe (too big for a slot, or closing)

    async def put(self, frames: np.ndarray) -> shm.SlotRef | None:
        """``frames`` copied into a free slot (waiting for a release while none is free); None when they
        must go through the pipe: too big for a slot, or the trainer is gone (nothing will be released)."""
        if frames.nbytes > self._writer.grant.slot_bytes:
            self.inline += 1
            return None
        while self._open:
            ref = self._writer.put(frames)
            if ref is not None:
                return ref
            self._released.clear()
            await self._released.wait()
        self.inline += 1
        return None

    def release(self, slot: int) -> None:
        """The trainer has read ``slot``."""
        self._writer.release(slot)
        self._released.set()

    def stop_waiting(self) -> None:
        """The trainer is gone: a ``put`` waiting for a slot gives up (its frames go by pipe, if anywhere)."""
        self._open = False
        self._released.set()

    def close(self) -> None:
        self.stop_waiting()
        self._writer.close()
