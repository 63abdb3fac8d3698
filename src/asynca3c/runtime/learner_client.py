"""Where minimize steps run: a worker process (the default) or executor threads.

A minimize step on a small network is a few hundred short torch calls, each of
which needs the GIL. Beside a loop thread that keeps the GIL busy stepping
environments, a step that costs 1.5 ms alone took 30-50 ms in a thread
executor on the 2-core CI machine, and a ``ProcessPoolExecutor`` still stalled
the loop about 1 ms per submit on its manager thread's locks. So the default
learner is one worker process (``asynca3c.runtime.learner_worker``) spoken to over
its stdin/stdout pipes through the event loop itself: no extra thread in this
process, the loop and the learner each get a core, and the loop never waits
for the learner. The worker owns the network and its optimizer state, so
updates are serialized by construction; several optimizer tasks keep it fed
(one batch trains while the next crosses the pipe).

A worker process can die (the OOM killer, a ``kill -9``): ``RestartingLearner``
starts a new one from the newest state the trainer handed it (``hold``), so
only the updates since then are lost, and gives up after ``max_restarts``.

``ThreadLearner`` keeps the learner in this process, behind a thread executor
and a lock, for hosts that cannot start processes.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import pickle
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
import torch

from asynca3c.config import Config
from asynca3c.core.learner import Learner, LearnerSpec
from asynca3c.core.messages import SampleBatch, Segment, StepStats
from asynca3c.core.model import ActorCritic
from asynca3c.errors import Asynca3cError, LearnerError
from asynca3c.runtime import shm
from asynca3c.runtime.faults import RestartWindow
from asynca3c.runtime.wire import HEADER, WorkerProcess, close_worker, encode_frame, exit_status, spawn_worker
from asynca3c.runtime.work_threads import WorkThreads, in_thread, undone_if_cancelled


class LearnerClient(Protocol):
    """What the loop side needs of a learner, wherever its steps run."""

    @property
    def pid(self) -> int | None:
        """The worker process's, or None when steps run in this process."""
        ...

    async def start(self) -> None: ...

    async def step(self, batch: SampleBatch, lr_factor: float = 1.0) -> tuple[StepStats,
                                                                             Sequence[np.ndarray | torch.Tensor]]:
        """One minimize step at ``lr_factor`` times the configured lr; its stats and the new weights (CPU)."""
        ...

    async def learn(self, batch: Segment, lr_factor: float = 1.0) -> tuple[StepStats,
                                                                          Sequence[np.ndarray | torch.Tensor]]:
        """Epochs of minibatch steps with V-trace targets on a batch of segments (at ``lr_factor`` times the
        configured lr); stats and new weights."""
        ...

    async def state(self) -> dict:
        """Model and optimizer state (CPU tensors) and the version."""
        ...

    async def load(self, state: dict) -> None: ...

    async def aclose(self) -> None: ...


def make_learner(model: ActorCritic, config: Config, device: torch.device,
                 on_restart: Callable[[], None] = lambda: None, work: WorkThreads | None = None) -> LearnerClient:
    """``work``: the run's threads for the process learner's copies of frames and weights."""
    spec = LearnerSpec.of(model, config, device)
    if config.learner == "process":
        return RestartingLearner(spec, config.max_learner_restarts, on_restart,
                                 make_worker=lambda spec: ProcessLearner(spec, work))
    if config.learner == "ray":  # ray_learner imports this module: it is asked only where Ray is wanted
        raise ValueError("learner='ray': use asynca3c.runtime.ray_learner.make_ray_learner")
    return ThreadLearner(spec, config.optimizers)


class LearnerDied(LearnerError):
    """The worker process (or Ray actor) is gone; ``how`` says how it ended ('signal 9', 'exit code 1')."""

    def __init__(self, how: str, what: str = "process"):
        super().__init__(f"the learner {what} died ({how})")
        self.how = how


class LearnerWorker(Protocol):
    """Where a ``RestartingLearner``'s requests run: raises ``LearnerDied`` from ``_request`` once gone."""

    pid: int | None

    async def start(self) -> None: ...

    async def _request(self, op: str, arg): ...

    async def aclose(self) -> None: ...


#: Observations of a batch at least this big cross to the worker through shared memory, not the pipe.
SHARED_FRAMES_MIN_BYTES = 1 << 20
#: Replies carry the weights through a shared-memory slot when a network's state is at least this big.
SHARED_WEIGHTS_MIN_BYTES = 1 << 20


@dataclasses.dataclass
class TransportStats:
    """What crossing to the learner process cost: observation bytes sent through shared memory (and
    samples, for bytes per sample), weight bytes received in replies, and the seconds this process spent
    copying observations into slots and reading replies, weights included (the share of time spent in
    transport)."""

    frame_bytes: int = 0
    frame_samples: int = 0
    frame_seconds: float = 0.0
    inline_batches: int = 0  # big batches that went through the pipe (no slot was free)
    weight_bytes: int = 0
    weight_replies: int = 0
    pipe_weight_replies: int = 0  # of those, replies whose weights were pickled through the pipe
    reply_seconds: float = 0.0


class ProcessLearner:
    """The learner in a worker process; requests are answered in order. Big arrays go through rings of
    shared-memory slots this process owns: a segment batch's observations of at least
    ``SHARED_FRAMES_MIN_BYTES`` (images), which the worker reads in place, and the weights of a network of at
    least ``SHARED_WEIGHTS_MIN_BYTES`` (a CNN), which the worker writes into a slot the request names. The
    pipe carries the slots' handles; a slot is free again once its reply has been read."""

    def __init__(self, spec: LearnerSpec, work: WorkThreads | None = None):
        """``work``: threads for the copies into and out of slots (default: asyncio's)."""
        self._spec = spec
        self._in_thread = in_thread(work)
        self._proc: WorkerProcess | None = None
        self._reader: asyncio.Task | None = None
        self._pending: collections.deque[asyncio.Future] = collections.deque()
        self._dead: LearnerDied | None = None
        self.pid: int | None = None
        self._frames: shm.SlotRing | None = None
        self._weights: shm.SlotRing | None = None
        self._closed_alive = False  # aclose() found the worker alive (a later request is refused, not restarted)
        self._shm_failed = False  # no segment could be made (e.g. /dev/shm full): everything goes by pipe
        self._making_ring = asyncio.Lock()
        # room for the acting copy's weights in a reply: the whole initial state, each array aligned
        self._weight_bytes = sum(shm.aligned(t.numel() * t.element_size()) for t in spec.weights.values())
        self._slots = int(spec.config.get("optimizers", 2)) + 1  # one per request in flight, and one spare
        self.transport = TransportStats()

    async def start(self) -> None:
        """Start the worker and build the network there (about a second: it imports torch)."""
        self._proc = await spawn_worker("asynca3c.runtime.learner_worker")
        self.pid = self._proc.pid
        self._reader = asyncio.get_running_loop().create_task(self._read_replies(), name="asynca3c-learner-io")
        try:
            await self._request("init", self._spec)
        except BaseException:
            await self.aclose()
            raise

    async def step(self, batch: SampleBatch, lr_factor: float = 1.0) -> tuple[StepStats, list[np.ndarray]]:
        """One minimize step; its stats and the new weights."""
        return await self._request("step", (batch, lr_factor))

    async def learn(self, batch: Segment, lr_factor: float = 1.0) -> tuple[StepStats, list[np.ndarray]]:
        """Epochs of minibatch steps on a batch of segments; their stats and the new weights."""
        return await self._request("learn", (batch, lr_factor))

    async def _through_slots(self, op: str, batch: SampleBatch | Segment, lr_factor: float, frames: bool):
        """``step``/``learn`` with the big arrays in shared-memory slots: the batch's observations (when
        ``frames``; copied there off the loop) and the reply's weights (written there by the worker, copied out
        off the loop). The pipe carries the rest, and any array that found no free slot."""
        claimed: list[tuple[shm.SlotRing, int]] = []
        sent = abandoned = False
        try:
            frames_ref = await self._frames_to_slot(batch, claimed) if frames else None
            if frames_ref is not None:
                batch = dataclasses.replace(batch, obs=np.empty((0,), batch.obs.dtype))
            self._check_open()  # again: closed during the copy, it must not make the weights ring
            weights_ring, weights_ref = await self._weights_slot(claimed)
            sent = True  # _send writes the request before its first await: from here the worker may see it
            stats, weights = await self._send(op, (batch, lr_factor, frames_ref, weights_ref))
            if isinstance(weights, shm.Packed):
                assert weights_ring is not None  # a Packed reply answers a request that named a slot
                weights = await self._weights_from_slot(weights_ring, weights)
            return stats, weights
        except asyncio.CancelledError:
            # once sent, the worker may still be using them: the slots stay claimed until the rings close
            abandoned = sent
            raise
        finally:
            if not abandoned:
                for ring, slot in claimed:
                    ring.release(slot)

    async def _frames_to_slot(self, batch, claimed: list) -> shm.SlotRef | None:
        obs = batch.obs
        ring = await self._ring("_frames", obs.nbytes)
        if ring is None:
            self.transport.inline_batches += 1
            return None
        slot = ring.claim()
        if slot is None:
            self.transport.inline_batches += 1
            return None
        claimed.append((ring, slot))
        ref = shm.SlotRef(ring.name, slot, slot * ring.slot_bytes, tuple(obs.shape), obs.dtype.str)
        start = time.perf_counter()
        try:  # tens of MB: a copy that releases the GIL
            await undone_if_cancelled(self._in_thread(np.copyto, ring.view(ref), obs), lambda _: ring.release(slot))
        except asyncio.CancelledError:
            claimed.remove((ring, slot))  # released once the thread stops writing into it
            raise
        stats = self.transport
        stats.frame_seconds += time.perf_counter() - start
        stats.frame_bytes += obs.nbytes
        stats.frame_samples += len(batch)
        return ref

    async def _weights_slot(self, claimed: list) -> tuple[shm.SlotRing | None, shm.SlotRef | None]:
        """A slot for the reply's weights (claimed, added to ``claimed``) and its ring; Nones for the pipe."""
        if self._weight_bytes < SHARED_WEIGHTS_MIN_BYTES:
            return None, None
        ring = await self._ring("_weights", self._weight_bytes)
        if ring is None:
            return None, None
        slot = ring.claim()
        if slot is None:
            return None, None
        claimed.append((ring, slot))
        return ring, shm.flat_ref(ring.name, slot, ring.slot_bytes)

    async def _ring(self, which: str, nbytes: int) -> shm.SlotRing | None:
        """The ``_frames`` or ``_weights`` ring, with slots of at least ``nbytes``; None where no segment can
        be made. A ring is made, or replaced by a bigger one, in a thread and by one request at a time:
        reserving a segment's pages held the loop for about 10 ms. One finished after a close or a cancel is
        unlinked at once."""
        async with self._making_ring:
            self._check_open()  # closed while this request waited for the lock: no new segment
            ring: shm.SlotRing | None = getattr(self, which)
            if ring is not None and nbytes <= ring.slot_bytes:
                return ring
            if self._shm_failed:
                return None
            size = nbytes if ring is None else shm.grown_slot_bytes(ring, nbytes)
            try:
                making = self._in_thread(shm.SlotRing, self._slots, size)
                made = await undone_if_cancelled(making, lambda unwanted: unwanted.close())
            except OSError as e:
                self._without_shared_memory(e)
                return None
            if self._proc is None:  # closed meanwhile, after closing the rings it had
                made.close()
                self._check_open()
            if ring is not None:
                ring.retire()  # unlinked once its last claimed slot is released
            setattr(self, which, made)
            return made

    def _without_shared_memory(self, error: OSError) -> None:
        self._shm_failed = True
        shm.warn_no_segment("the learner's frames and weights", error)

    async def _weights_from_slot(self, ring: shm.SlotRing, packed: shm.Packed) -> list[np.ndarray]:
        start = time.perf_counter()
        weights = await self._in_thread(shm.unpack_copy, ring.view(packed.ref), packed)
        stats = self.transport
        stats.reply_seconds += time.perf_counter() - start
        stats.weight_bytes += packed.nbytes
        stats.weight_replies += 1
        return weights

    async def state(self) -> dict:
        """Model and optimizer state (CPU tensors) and the version."""
        return await self._request("state", None)

    async def load(self, state: dict) -> None:
        await self._request("load", state)

    async def _request(self, op: str, arg):
        if op in ("step", "learn") and shm.AVAILABLE:
            frames = op == "learn" and arg[0].obs.nbytes >= SHARED_FRAMES_MIN_BYTES
            if frames and self._shm_failed:
                self.transport.inline_batches += 1  # a big batch through the pipe
                frames = False
            if frames or self._weight_bytes >= SHARED_WEIGHTS_MIN_BYTES:
                self._check_open()  # before any ring is made: a closed learner must not create segments
                batch, lr_factor = arg
                return await self._through_slots(op, batch, lr_factor, frames)
        return await self._send(op, arg)

    def _check_open(self) -> WorkerProcess:
        if self._dead is not None and not self._closed_alive:  # died (a restart may follow), maybe closed since
            raise LearnerDied(self._dead.how)
        if self._proc is None:  # closed while alive: its exit is not a death, and nothing restarts it
            raise LearnerError("the learner is closed")
        return self._proc

    async def _send(self, op: str, arg):
        proc = self._check_open()
        frame = encode_frame((op, arg))  # before the reply slot: a request that cannot be pickled takes none
        fut = asyncio.get_running_loop().create_future()
        self._pending.append(fut)
        # Started with a stdin pipe; closed only after the run's last request.
        assert proc.stdin is not None
        try:
            proc.stdin.write(frame)
            await proc.stdin.drain()
        except (ConnectionError, RuntimeError):  # the pipe broke: the reader task reports how it died
            pass
        return await fut

    async def _read_replies(self) -> None:
        proc = self._proc
        assert proc is not None  # started by start() before this task
        out = proc.stdout
        assert out is not None  # started with a stdout pipe
        try:
            while True:
                (size,) = HEADER.unpack(await out.readexactly(HEADER.size))
                data = await out.readexactly(size)
                start = time.perf_counter()
                reply = pickle.loads(data)
                stats = self.transport
                stats.reply_seconds += time.perf_counter() - start
                if reply[0] == "ok" and isinstance(reply[1], tuple) and len(reply[1]) == 2 and \
                        isinstance(reply[1][1], list):  # a step's (stats, weights)
                    stats.weight_bytes += size
                    stats.weight_replies += 1
                    stats.pipe_weight_replies += 1
                fut = self._pending.popleft()
                if fut.done():  # its caller was cancelled; the reply is dropped
                    continue
                if reply[0] == "ok":
                    fut.set_result(reply[1])
                else:
                    _, exc, remote_tb = reply
                    if not isinstance(exc, Asynca3cError):  # a bug, not a refusal: where it happened
                        exc.add_note(f"in the learner process:\n{remote_tb}")
                    fut.set_exception(exc)
        except (asyncio.IncompleteReadError, ConnectionError):
            self._dead = LearnerDied(exit_status(await proc.wait()))
            while self._pending:
                fut = self._pending.popleft()
                if not fut.done():
                    fut.set_exception(LearnerDied(self._dead.how))

    async def aclose(self) -> None:
        """Ask the worker to exit and wait for it (killed if it does not within 5 s)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        self._closed_alive = self._dead is None
        try:
            await close_worker(proc, encode_frame(("close", None)), 5.0)
        finally:
            for ring in (self._frames, self._weights):
                if ring is not None:
                    ring.close()
            self._frames = self._weights = None
            if self._reader is not None:
                self._reader.cancel()
                try:
                    await self._reader
                except asyncio.CancelledError:
                    pass
                self._reader = None


class RestartingLearner:
    """A ``ProcessLearner`` (or another ``LearnerWorker``) that outlives its worker: a request that finds the
    worker dead starts a new one from the newest held state and is sent again. A death after
    ``max_restarts`` restarts within ten minutes (``RestartWindow``) is final."""

    def __init__(self, spec: LearnerSpec, max_restarts: int, on_restart: Callable[[], None],
                 make_worker: Callable[[LearnerSpec], LearnerWorker] = lambda spec: ProcessLearner(spec)):
        """``make_worker``: a new worker (a process by default, a Ray actor for learner='ray')."""
        self._spec, self.max_restarts, self._on_restart = spec, max_restarts, on_restart
        self._make_worker = make_worker
        self._worker = make_worker(spec)
        self._held: dict | None = None  # model, optimizer, version: what a new worker starts from
        self._version = 0  # the newest version a reply carried
        self._lock = asyncio.Lock()
        self._window = RestartWindow(max_restarts)
        self._closed = False

    @property
    def pid(self) -> int | None:
        return self._worker.pid

    @property
    def transport(self) -> TransportStats | None:
        """The current worker's transport counters (None for a worker that keeps none, e.g. a Ray actor)."""
        return getattr(self._worker, "transport", None)

    @property
    def held_state(self) -> dict | None:
        """The newest learner state handed to ``hold`` (or fetched at start or after a restart)."""
        return self._held

    def hold(self, state: dict) -> None:
        """Keep ``state`` (from ``state()``) as what a replacement worker would start from."""
        self._held = state

    async def start(self) -> None:
        await self._worker.start()
        self._held = await self._worker._request("state", None)

    async def step(self, batch: SampleBatch, lr_factor: float = 1.0):
        return self._seen(await self._call("step", (batch, lr_factor)))

    async def learn(self, batch: Segment, lr_factor: float = 1.0):
        return self._seen(await self._call("learn", (batch, lr_factor)))

    async def state(self) -> dict:
        return await self._call("state", None)

    async def load(self, state: dict) -> None:
        await self._call("load", state)
        self._held, self._version = state, max(self._version, int(state["version"]))

    def _seen(self, reply):
        self._version = max(self._version, reply[0].version)
        return reply

    async def _call(self, op: str, arg):
        """The request, on whichever worker is alive: a death restarts it (until ``_restart`` gives up)
        and the request is sent again."""
        while True:
            worker = self._worker
            try:
                return await worker._request(op, arg)
            except LearnerDied as died:
                await self._restart(worker, died)

    async def _restart(self, dead: LearnerWorker, died: LearnerDied) -> None:
        async with self._lock:
            if self._closed:  # a request that outlived aclose: nothing is restarted after it
                raise LearnerError("the learner is closed")
            if self._worker is not dead:  # another request found it dead first and restarted it
                return
            await dead.aclose()
            if self._window.full():
                raise LearnerError(self._window.refusal(str(died), "max_learner_restarts"))
            new = self._make_worker(self._spec)
            try:
                await new.start()
                held = self._held
                if held is not None:  # versions go on from the newest one published, so the acting copy follows
                    await new._request("load", {**held, "version": max(self._version, int(held["version"]))})
            except BaseException:  # cancelled or failed half-way: the new process must not outlive us
                await new.aclose()
                raise
            self._window.record()
            self._on_restart()
            self._worker = new

    async def aclose(self) -> None:
        self._closed = True
        await self._worker.aclose()


class ThreadLearner:
    """The learner in this process: steps run in executor threads, serialized by its lock."""

    pid: int | None = None  # steps run in this process

    def __init__(self, spec: LearnerSpec, threads: int):
        self._spec = spec
        self._threads = threads
        self.learner: Learner | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self.learner = self._spec.build()
        self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="asynca3c-learner")

    async def _call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def step(self, batch: SampleBatch, lr_factor: float = 1.0) -> tuple[StepStats, list[torch.Tensor]]:
        assert self.learner is not None, "start() first"
        return await self._call(self.learner.step, batch, lr_factor)

    async def learn(self, batch: Segment, lr_factor: float = 1.0) -> tuple[StepStats, list[torch.Tensor]]:
        assert self.learner is not None, "start() first"
        return await self._call(self.learner.learn, batch, lr_factor)

    async def state(self) -> dict:
        assert self.learner is not None, "start() first"
        return await self._call(self.learner.state)

    async def load(self, state: dict) -> None:
        assert self.learner is not None, "start() first"
        await self._call(self.learner.load, state)

    async def aclose(self) -> None:
        """Stop the executor; a step in flight (milliseconds) finishes first."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
