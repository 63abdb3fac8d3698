"""The acting copy's weights to process shards through shared memory: written once per version for all
shards, instead of pickled through each shard's pipe.

The trainer owns a ring of slots (``WeightsBoard``). A new version is packed into a free slot once
(``publish``); each shard's pusher sends only the slot's layout (``shm.Packed``), and the shard copies the
arrays out and answers that it has read them. A slot is reused once every shard it was sent to has
answered (or died: its client lets go of what it held) and a newer version has replaced it.

Each shard is sent a new version only while it has answered for all but one of those sent to it
(``MAX_UNREAD``), so a shard whose answers wait behind its queued segments, or that hangs, holds back
only its own weights: shards hold at most ``MAX_UNREAD`` slots each, and with one more for the newest
version a publishing shard always finds a free slot.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from asynca3c.runtime import shm

#: A network's weights smaller than this go through the pipes: a slot saves little there (the MLPs).
MIN_BYTES = 1 << 20
#: Versions a shard may have been sent and not yet answered for.
MAX_UNREAD = 2


def weights_bytes(arrays: Sequence[np.ndarray]) -> int:
    """Room for ``arrays`` packed into one slot (each aligned)."""
    return sum(shm.aligned(a.nbytes) for a in arrays)


class WeightsBoard:
    """The trainer's side: the newest published version, and which slots shards still read."""

    def __init__(self, shards: int, slot_bytes: int):
        self._ring = shm.SlotRing(MAX_UNREAD * shards + 1, slot_bytes)
        self._readers: dict[int, int] = {}  # slot -> shards it was sent to that have not answered
        self._newest: tuple[int, shm.Packed] | None = None  # (version, where it lies)
        self.published = 0  # versions written
        self.sent = 0  # layouts sent to shards

    @classmethod
    def for_weights(cls, shards: int, arrays: Sequence[np.ndarray]) -> WeightsBoard | None:
        """A board for ``shards`` process shards and a network whose shipped weights are ``arrays``; None
        where the pipes will do (a small network, no POSIX shared memory or none to be had)."""
        size = weights_bytes(arrays)
        if shards < 1 or size < MIN_BYTES or not shm.AVAILABLE:
            return None
        try:
            return cls(shards, size)
        except OSError as e:
            shm.warn_no_segment("the shards' weights", e)
            return None

    def publish(self, version: int, arrays: Sequence[np.ndarray]) -> shm.Packed | None:
        """Where ``version`` (whose weights are ``arrays``) lies, packed into a slot now unless it already
        is; None when no slot is free (a shard sent more than ``MAX_UNREAD``: send it by pipe)."""
        if self._newest is not None and self._newest[0] == version:
            return self._newest[1]
        slot = self._ring.claim()
        if slot is None:
            return None
        ref = shm.flat_ref(self._ring.name, slot, self._ring.slot_bytes)
        try:
            packed = shm.pack_into(ref, arrays, flat=self._ring.view(ref))
        except BaseException:
            self._ring.release(slot)
            raise
        old, self._newest = self._newest, (version, packed)
        self.published += 1
        if old is not None:
            self._free_if_unread(old[1].ref.slot)
        return packed

    def sent_to_one(self, packed: shm.Packed) -> None:
        """A shard was sent ``packed``: its slot stays until that shard answers (``read``) or is let go."""
        slot = packed.ref.slot
        self._readers[slot] = self._readers.get(slot, 0) + 1
        self.sent += 1

    def read(self, slot: int) -> None:
        """A shard has copied the weights out of ``slot`` (or will never read it: it died)."""
        left = self._readers[slot] - 1
        if left:
            self._readers[slot] = left
        else:
            del self._readers[slot]
            self._free_if_unread(slot)

    @property
    def in_use(self) -> int:
        """Slots held: the newest version's and those shards have not answered for."""
        return self._ring.in_use

    def _free_if_unread(self, slot: int) -> None:
        if slot in self._readers or (self._newest is not None and self._newest[1].ref.slot == slot):
            return
        self._ring.release(slot)

    def close(self) -> None:
        self._ring.close()


def copy_out(packed: shm.Packed) -> list[np.ndarray]:
    """The shard's side: copies of the arrays ``packed`` describes, read from the trainer's segment."""
    return shm.unpack_copy(shm.view(packed.ref), packed)
