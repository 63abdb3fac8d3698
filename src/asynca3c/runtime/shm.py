"""Shared-memory slots: big numpy arrays cross process boundaries without being pickled.

The trainer copies a batch's big array (uint8 observations, network weights) into a slot of a
:class:`SlotRing` and sends only the small, picklable :class:`SlotRef`; the worker maps the segment
once (:func:`attach`, cached by name) and reads the array in place (:func:`view`, zero-copy), replies,
and the trainer releases the slot, which a later batch reuses. The reader must be done with the view
(or have copied it, e.g. to the GPU) before it replies: a released slot is overwritten.

Ownership. Exactly one process, the creator, owns a segment and unlinks it: ``close()`` (call it in a
``finally``), a finalizer when the ring is collected or the interpreter exits, or, if the creator is
SIGKILLed, the creator's multiprocessing resource tracker, with which the creator registers the segment.
Attachers never register. ``SharedMemory(name=..., create=False)`` (before Python 3.13's ``track=False``)
registers the segment with the *attaching* process's tracker, which unlinks the owner's segment, with a
"leaked shared_memory" warning, when the attacher exits; so attachers here map the segment with
``shm_open`` + ``mmap`` themselves: no tracker sees them, and none is started in a worker.

Several writers. The owner splits the slots into disjoint ranges (:meth:`SlotRing.writer_grants`); each
writer process claims only within its own range (:class:`SlotWriter`), and whoever reads a slot sends
its release back to that writer as a message. No slot has two allocators, so no lock is needed.

Growing. A slot's size is fixed; for a bigger array make a bigger ring (:func:`ensure_ring`).

POSIX only (Linux, macOS). Imports only numpy and the standard library (the resource tracker lazily,
on the owner side), so the learner worker imports this cheaply. Nothing here is thread-safe: each ring,
writer and attachment belongs to one thread (the event loop's).
"""

from __future__ import annotations

import importlib
import logging
import math
import mmap
import os
import secrets
import weakref
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

#: every segment's name starts with this (``/dev/shm/asynca3c_*`` on Linux), then the maker's pid
PREFIX = "asynca3c_"
#: slot sizes are rounded up to this, so every slot starts aligned for any dtype (and on a cache line)
ALIGN = 64
#: a worker keeps at most this many segments mapped (least recently attached unmapped first), so the
#: segments of rings its owner replaced (:func:`ensure_ring`) do not stay mapped forever
MAX_ATTACHED = 8

try:  # CPython's shm_open/shm_unlink, as multiprocessing.shared_memory uses them; no typeshed stub
    _posixshmem: Any = importlib.import_module("_posixshmem")
except ImportError:  # Windows
    _posixshmem = None
#: Whether this platform has POSIX shared memory (callers send arrays inline where it has not).
AVAILABLE = _posixshmem is not None

_warned_of: set[str] = set()  # what the no-segment warning has been given for, in this process


def warn_no_segment(what: str, error: OSError) -> None:
    """Warn that no segment could be made, so ``what`` goes through a pipe: once per process for each
    ``what`` (restarted workers and each new ring would otherwise repeat it)."""
    if what in _warned_of:
        return
    _warned_of.add(what)
    logging.getLogger("asynca3c").warning(
        "no shared-memory segment could be made for %s (%s); they go through a pipe, which is slower (on "
        "Docker, raise --shm-size)", what, error)


def aligned(nbytes: int) -> int:
    """``nbytes`` rounded up to a multiple of ALIGN: where the next slot or packed array may start."""
    return -(-nbytes // ALIGN) * ALIGN


def _nbytes(shape: tuple[int, ...], dtype: str) -> int:
    return np.dtype(dtype).itemsize * math.prod(shape)


@dataclass(frozen=True)
class SlotRef:
    """The handle that travels instead of the array: which segment, which slot, and how to read it."""

    name: str
    slot: int
    offset: int
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return _nbytes(self.shape, self.dtype)


@dataclass(frozen=True)
class Packed:
    """Several arrays written back to back into one slot (:func:`pack_into`), e.g. a network's weights:
    the slot (as flat bytes) and where each array lies in it, as (byte offset, shape, dtype)."""

    ref: SlotRef
    parts: tuple[tuple[int, tuple[int, ...], str], ...]

    @property
    def nbytes(self) -> int:
        return sum(_nbytes(shape, dtype) for _, shape, dtype in self.parts)


def flat_ref(name: str, slot: int, slot_bytes: int) -> SlotRef:
    """A handle to a whole slot as flat bytes: where :func:`pack_into` writes several arrays."""
    return SlotRef(name, slot, slot * slot_bytes, (slot_bytes,), "|u1")


def pack_into(ref: SlotRef, arrays: Iterable[np.ndarray], flat: np.ndarray | None = None) -> Packed:
    """Writer side: copies ``arrays`` one after another (each aligned to ALIGN) into the flat slot ``ref``
    of another process's segment (or of the caller's own ring: pass its ``view(ref)`` as ``flat``); the
    message carries the returned :class:`Packed` instead of the arrays. Raises ValueError, naming the
    sizes, when they do not fit."""
    flat = view(ref) if flat is None else flat
    parts, at = [], 0
    for array in arrays:
        array = np.asarray(array)
        array = array if array.flags.c_contiguous else array.copy(order="C")
        _check_fits(array, flat.nbytes, ref.name)  # dtype, and a clear message for one array too big
        if at + array.nbytes > flat.nbytes:
            raise ValueError(f"arrays do not fit the {flat.nbytes}-byte slot {ref.slot} of segment {ref.name}: "
                             f"{at} bytes are used and the next one ({array.dtype} {array.shape}) has "
                             f"{array.nbytes}; the owner must make the slots bigger")
        np.copyto(flat[at:at + array.nbytes].view(array.dtype).reshape(array.shape), array, casting="no")
        parts.append((at, tuple(int(n) for n in array.shape), array.dtype.str))
        at = aligned(at + array.nbytes)
    return Packed(ref, tuple(parts))


def unpack_copy(flat: np.ndarray, packed: Packed) -> list[np.ndarray]:
    """Owner side: copies of the arrays ``packed`` describes, out of ``flat`` (its slot, as
    ``SlotRing.view(packed.ref)`` gives it); the slot can be released as soon as this returns."""
    out = []
    for at, shape, dtype in packed.parts:
        size = _nbytes(shape, dtype)
        if at < 0 or at + size > flat.nbytes:
            raise ValueError(f"a packed array at byte {at} of {size} bytes reaches past its {flat.nbytes}-byte slot")
        out.append(flat[at:at + size].view(dtype).reshape(shape).copy())
    return out


@dataclass(frozen=True)
class WriterGrant:
    """What a writer process needs (picklable): the segment, its slot size, and the slots it owns."""

    name: str
    slot_bytes: int
    slots: range


class FreeSlots:
    """A FIFO free list over some slot indices, for their single allocator.

    FIFO: a just-released slot is reused last, which gives a slow reader the most slack. Releasing a slot
    that is not claimed raises, since that is a protocol bug (a double release, or a foreign slot).
    """

    def __init__(self, slots: Iterable[int]) -> None:
        self._free: deque[int] = deque(slots)
        self._is_free = set(self._free)
        self._all = frozenset(self._free)

    def claim(self) -> int | None:
        """A free slot, now claimed; None when all are claimed."""
        if not self._free:
            return None
        slot = self._free.popleft()
        self._is_free.discard(slot)
        return slot

    def release(self, slot: int) -> None:
        if slot not in self._all:
            raise ValueError(f"slot {slot} is not one of these slots ({len(self._all)} of them)")
        if slot in self._is_free:
            raise ValueError(f"slot {slot} is already free (released twice?)")
        self._free.append(slot)
        self._is_free.add(slot)

    @property
    def in_use(self) -> int:
        return len(self._all) - len(self._free)

    def __len__(self) -> int:
        """How many are free."""
        return len(self._free)


class SlotRing:
    """Owner side: one shared-memory segment of ``slots`` slots of ``slot_bytes`` (rounded up to ALIGN).

    ``put`` copies an array into a free slot and returns its :class:`SlotRef`; ``release`` frees the slot
    once the reader is done. The creating process owns the segment: ``close()`` unlinks it (also as a
    context manager, and by a finalizer at collection or interpreter exit); if this process is killed,
    its resource tracker unlinks it.
    """

    def __init__(self, slots: int, slot_bytes: int) -> None:
        if slots < 1 or slot_bytes < 1:
            raise ValueError(f"a ring needs at least one slot of at least one byte, not {slots} x {slot_bytes}")
        self._slots = slots
        self._slot_bytes = aligned(slot_bytes)
        self._free = FreeSlots(range(slots))
        self._granted = False
        self._retired = False
        self._name, mm = _create(slots * self._slot_bytes)
        self._mm: mmap.mmap | None = mm
        # holds only the name and pid, not self: unlinks exactly once, from close() or at collection/exit
        self._finalizer = weakref.finalize(self, _unlink, self._name, os.getpid())

    @property
    def name(self) -> str:
        """The segment's name (no leading slash): what :func:`attach` takes."""
        return self._name

    @property
    def slots(self) -> int:
        return self._slots

    @property
    def slot_bytes(self) -> int:
        """Bytes per slot: the biggest array that ``put`` takes."""
        return self._slot_bytes

    @property
    def in_use(self) -> int:
        """Slots claimed and not yet released (0 once split among writers: they keep the count)."""
        return self._free.in_use

    @property
    def closed(self) -> bool:
        return self._mm is None

    def claim(self) -> int | None:
        """A free slot's index, now claimed; None when every slot is claimed (or the ring is split)."""
        self._mapping()
        return self._free.claim()

    def release(self, slot: int) -> None:
        """Frees a claimed slot for reuse. After ``close()`` this does nothing: the slots are gone anyway,
        and a late reply in a shutdown path should not raise."""
        if self._mm is None:
            return
        if self._granted:
            raise ValueError(f"ring {self._name} is split among writers: release slot {slot} at its writer")
        self._free.release(slot)
        if self._retired and self._free.in_use == 0:
            self.close()

    def put(self, array: np.ndarray) -> SlotRef | None:
        """Copies ``array`` into a free slot and returns its handle; None when no slot is free (release one,
        or send the array inline), so a full ring costs no exception on the hot path.

        Raises ValueError, naming the sizes, when the array is bigger than a slot (see :func:`ensure_ring`)
        or its dtype cannot travel as a string (object and structured dtypes).
        """
        array = np.asarray(array)
        _check_fits(array, self._slot_bytes, self._name)
        mm = self._mapping()
        slot = self._free.claim()
        if slot is None:
            return None
        return _write(mm, self._name, slot, slot * self._slot_bytes, array)

    def view(self, ref: SlotRef) -> np.ndarray:
        """The array in ``ref``'s slot, in place (writable, zero-copy)."""
        if ref.name != self._name:
            raise ValueError(f"{ref} is not a slot of ring {self._name}")
        if ref.offset != ref.slot * self._slot_bytes or ref.nbytes > self._slot_bytes:
            raise ValueError(f"{ref} does not match ring {self._name}'s {self._slot_bytes}-byte slots")
        return _ndarray(self._mapping(), ref)

    def writer_grants(self, n: int) -> list[WriterGrant]:
        """Splits every slot among ``n`` writer processes, in disjoint contiguous ranges as even as possible.

        From then on this ring only maps, views and owns the segment: each writer claims and releases within
        its grant (:class:`SlotWriter`), so the ring's own ``claim`` returns None.
        """
        if self._granted:
            raise ValueError(f"ring {self._name} is already split among writers")
        if not 1 <= n <= self._slots:
            raise ValueError(f"cannot split {self._slots} slots among {n} writers")
        if self._free.in_use:
            raise ValueError(f"ring {self._name} has {self._free.in_use} claimed slots; split it before use")
        self._mapping()
        self._granted = True
        self._free = FreeSlots(())
        base, extra = divmod(self._slots, n)
        grants, start = [], 0
        for k in range(n):
            stop = start + base + (k < extra)
            grants.append(WriterGrant(self._name, self._slot_bytes, range(start, stop)))
            start = stop
        return grants

    def retire(self) -> None:
        """Closes the ring as soon as no slot is claimed: now if none is, else at the last ``release``.

        Handles already sent stay readable until the reader releases them, which ``close()`` now would not
        guarantee (a reader that had not attached yet would find the segment gone).
        """
        if self._granted:
            raise RuntimeError(f"ring {self._name} is split among writers: close it once they are done")
        self._retired = True
        if self._free.in_use == 0:
            self.close()

    def close(self) -> None:
        """Unlinks the segment and unmaps it; idempotent. Views still alive keep their pages mapped (and
        valid) until they go; attachers' mappings likewise stay valid until they close them."""
        self._finalizer()
        mm, self._mm = self._mm, None
        if mm is not None:
            _unmap(mm)

    def __enter__(self) -> SlotRing:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._mm is None else f"{self._free.in_use} in use"
        return f"SlotRing({self._name!r}, {self._slots} x {self._slot_bytes} bytes, {state})"

    def _mapping(self) -> mmap.mmap:
        if self._mm is None:
            raise ValueError(f"ring {self._name} is closed")
        return self._mm


def grown_slot_bytes(ring: SlotRing, nbytes: int) -> int:
    """The slot size of the ring that replaces ``ring`` for an ``nbytes`` array: at least double, so slowly
    growing batches do not regrow every time."""
    return max(nbytes, 2 * ring.slot_bytes)


def ensure_ring(ring: SlotRing, nbytes: int) -> SlotRing:
    """``ring`` if an ``nbytes`` array fits its slots; else a new ring with as many slots, of
    :func:`grown_slot_bytes`, the old ring retired: it is unlinked once its last claimed slot is released.
    Release each handle on the ring that made it (``ref.name`` tells which).
    """
    if nbytes <= ring.slot_bytes:
        return ring
    bigger = SlotRing(ring.slots, grown_slot_bytes(ring, nbytes))
    try:
        ring.retire()
    except BaseException:
        bigger.close()
        raise
    return bigger


class Attached:
    """Worker side: a mapping of a segment that another process owns. It never registers with a resource
    tracker, so neither its exit nor its crash unlinks the owner's segment. Prefer :func:`attach`, which
    maps each segment once per process."""

    def __init__(self, name: str) -> None:
        try:
            fd = _shm_open(name, os.O_RDWR)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"no shared-memory segment {name!r}: its owner closed it or exited") from e
        try:
            self._size = os.fstat(fd).st_size
            self._mm: mmap.mmap | None = mmap.mmap(fd, self._size)
        finally:
            os.close(fd)  # the mapping keeps the memory; the descriptor is not needed
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @property
    def size(self) -> int:
        return self._size

    @property
    def closed(self) -> bool:
        return self._mm is None

    def view(self, ref: SlotRef) -> np.ndarray:
        """The array in ``ref``'s slot, in place (writable, zero-copy)."""
        if ref.name != self._name:
            raise ValueError(f"{ref} is not in segment {self._name}")
        if self._mm is None:
            raise ValueError(f"segment {self._name} is detached")
        return _ndarray(self._mm, ref)

    def close(self) -> None:
        """Unmaps (never unlinks: the owner does that); idempotent. Live views keep their pages mapped."""
        if _attached.get(self._name) is self:
            del _attached[self._name]
        mm, self._mm = self._mm, None
        if mm is not None:
            _unmap(mm)

    def __enter__(self) -> Attached:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


_attached: OrderedDict[str, Attached] = OrderedDict()


def attach(name: str) -> Attached:
    """This process's mapping of segment ``name``, made on first use and then reused."""
    segment = _attached.get(name)
    if segment is not None:
        _attached.move_to_end(name)
        return segment
    segment = Attached(name)
    _attached[name] = segment
    while len(_attached) > MAX_ATTACHED:
        _attached[next(iter(_attached))].close()
    return segment


def view(ref: SlotRef) -> np.ndarray:
    """The array behind a handle, in place: ``attach(ref.name).view(ref)``."""
    return attach(ref.name).view(ref)


def detach_all() -> None:
    """Unmaps every cached attachment (a worker's shutdown; tests)."""
    for segment in list(_attached.values()):
        segment.close()


class SlotWriter:
    """A writer process's side of a split ring: claims and writes only within its own grant; the reader's
    releases come back to it as messages (``release``). It maps the segment itself (not via the cache)."""

    def __init__(self, grant: WriterGrant) -> None:
        self._grant = grant
        self._segment = Attached(grant.name)
        self._free = FreeSlots(grant.slots)

    @property
    def grant(self) -> WriterGrant:
        return self._grant

    @property
    def in_use(self) -> int:
        return self._free.in_use

    def claim(self) -> int | None:
        """One of this writer's free slots, now claimed; None when all of them are claimed."""
        return self._free.claim()

    def release(self, slot: int) -> None:
        self._free.release(slot)

    def put(self, array: np.ndarray) -> SlotRef | None:
        """As :meth:`SlotRing.put`, within this writer's slots: None when all of them are claimed."""
        array = np.asarray(array)
        _check_fits(array, self._grant.slot_bytes, self._grant.name)
        mm = self._segment._mm
        if mm is None:
            raise ValueError(f"writer of segment {self._grant.name} is closed")
        slot = self._free.claim()
        if slot is None:
            return None
        return _write(mm, self._grant.name, slot, slot * self._grant.slot_bytes, array)

    def close(self) -> None:
        self._segment.close()


# -- helpers -------------------------------------------------------------------------------------------------


def _shm_open(name: str, flags: int) -> int:
    if _posixshmem is None:
        raise OSError("asynca3c.runtime.shm needs POSIX shared memory (Linux, macOS)")
    fd: int = _posixshmem.shm_open("/" + name, flags, mode=0o600)
    return fd


def maker_pid(name: str) -> int | None:
    """The pid of the process that made segment ``name`` (``asynca3c_<pid>_<hex>``): a leftover segment
    names the process that leaked it. None for a name not of that form."""
    pid = name.removeprefix(PREFIX).split("_")[0]
    return int(pid) if name.startswith(PREFIX) and pid.isdigit() else None


def _create(size: int) -> tuple[str, mmap.mmap]:
    """Creates, sizes and maps a new segment, registered with this process's resource tracker so that it is
    unlinked even if this process is SIGKILLed."""
    from multiprocessing import resource_tracker

    while True:
        name = f"{PREFIX}{os.getpid()}_{secrets.token_hex(6)}"  # at most 29 characters: within macOS's 31
        try:
            fd = _shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR)
        except FileExistsError:
            continue
        break
    resource_tracker.register("/" + name, "shared_memory")
    try:
        os.ftruncate(fd, size)
        if hasattr(os, "posix_fallocate"):  # reserve the pages now: a full /dev/shm raises OSError here
            os.posix_fallocate(fd, 0, size)  # instead of a SIGBUS at the first write into a sparse page
        mm = mmap.mmap(fd, size)
    except BaseException:
        _unlink(name, os.getpid())
        raise
    finally:
        os.close(fd)
    return name, mm


def _unlink(name: str, creator_pid: int) -> None:
    """Unlinks and unregisters a segment, in its creator only: a forked child exiting must not unlink it."""
    if os.getpid() != creator_pid:
        return
    from multiprocessing import resource_tracker

    try:
        _posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        pass  # someone else unlinked it (e.g. an attacher's tracker, had it registered); still unregister
    resource_tracker.unregister("/" + name, "shared_memory")


def _unmap(mm: mmap.mmap) -> None:
    try:
        mm.close()
    except BufferError:
        pass  # views still alive: they hold the mmap, which unmaps when the last of them goes


def _check_fits(array: np.ndarray, slot_bytes: int, name: str) -> None:
    if array.dtype.hasobject or np.dtype(array.dtype.str) != array.dtype:
        raise ValueError(f"dtype {array.dtype} cannot travel through shared memory; use a plain numeric dtype")
    if array.nbytes > slot_bytes:
        raise ValueError(
            f"array of {array.nbytes} bytes ({array.dtype} {array.shape}) does not fit a {slot_bytes}-byte slot "
            f"of ring {name}; make a bigger ring (ensure_ring)"
        )


def _write(mm: mmap.mmap, name: str, slot: int, offset: int, array: np.ndarray) -> SlotRef:
    ref = SlotRef(name, slot, offset, tuple(int(n) for n in array.shape), array.dtype.str)
    np.copyto(_ndarray(mm, ref), array, casting="no")
    return ref


def _ndarray(mm: mmap.mmap, ref: SlotRef) -> np.ndarray:
    if ref.offset < 0 or ref.offset + ref.nbytes > len(mm):
        raise ValueError(f"{ref} reaches past the {len(mm)}-byte segment")
    # frombuffer, not ndarray(buffer=mm): its view holds a buffer export on the mmap, so closing the mmap
    # under a live view raises BufferError (see _unmap) instead of unmapping it (a segfault on next access)
    dtype = np.dtype(ref.dtype)
    return np.frombuffer(mm, dtype, math.prod(ref.shape), ref.offset).reshape(ref.shape)
