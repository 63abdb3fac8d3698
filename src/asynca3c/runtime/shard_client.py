"""The trainer's side of an acting shard: start it, send it the newest weights, put what its agents ship
on the run's queue, and restart it when it dies. ``ProcessShard`` runs the shard in a worker process
(``shard_worker``); ``ray_shards.RayShard`` runs the same shard as a Ray actor.

A shard client stands where an agent would on the trainer's loop (``run``,
``stop``, ``aclose``), so a run treats its shards like its agents. Reading a
shard's frames, and pickling the weights once per version for each shard, is
the work it adds to the loop: its environments, its forward passes and its
return kernels run elsewhere, on another core. The
reader waits on the run's bounded queue before reading on, and the shard waits
on its channel, so a slow learner holds shards back as it holds agents.

A shard that dies, or that sends nothing for ``shard_timeout`` seconds (it
reports every second), is killed and started again with fresh environment
seeds and the current weights; its unsent samples and the steps and episodes
it had not yet reported (at most a second's) are what is lost, and
``shard_restarts`` counts it. Restarts beyond ``max_shard_restarts`` within
ten minutes (all shards together) stop the run. A shard that reports an error
(an environment fault the fault policy does not survive, an env_factory that
does not load) stops the run with that error: a restart would meet it again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import pickle
import sys
from collections.abc import Callable

import numpy as np

from asynca3c.errors import Asynca3cError, ShardError
from asynca3c.runtime.faults import RestartWindow
from asynca3c.runtime.predictor import Predictor
from asynca3c.runtime.progress import Progress
from asynca3c.runtime.shard import ShardReport, ShardSpec
from asynca3c.runtime.shard_frames import FrameRing
from asynca3c.runtime.shard_weights import MAX_UNREAD, WeightsBoard
from asynca3c.runtime.wire import WorkerProcess, close_worker, encode_frame, exit_status, read_frame_async, spawn_worker

#: Longest wait for a new shard to say it is ready (it imports torch and makes its environments).
START_TIMEOUT = 120.0
#: Longest wait for a stopping shard process to exit by itself before it is killed.
EXIT_GRACE = 5.0


class ShardDied(Exception):
    """The shard is gone or silent; ``how`` says which."""

    def __init__(self, how: str):
        super().__init__(how)
        self.how = how


async def _read_to_end(stream: asyncio.StreamReader) -> None:
    while await stream.read(1 << 16):
        pass


class RestartBudget:
    """The shards' restarts, all shards together (``max_shard_restarts`` within ten minutes)."""

    def __init__(self, max_restarts: int, progress: Progress):
        self.window, self.progress = RestartWindow(max_restarts), progress

    def spend(self, what: str) -> None:
        """Count one restart for ``what`` happened ('shard 0's process died (...)'); ShardError when the
        budget is spent."""
        if self.window.full():
            raise ShardError(self.window.refusal(f"{what}; shards were lost", "max_shard_restarts"))
        self.window.record()
        self.progress.shard_restarts += 1


class ShardClient:
    """One acting shard, wherever it runs, restarted when it dies. Subclasses say how a shard is started
    (``_spawn``), heard (``_next_frames``), sent weights (``_send_weights``), asked to stop
    (``_send_stop``), killed (``_kill``) and released (``_release``)."""

    kind = "shard"

    def __init__(self, index: int, spec_for: Callable[[int], ShardSpec], *, queue: asyncio.Queue,
                 progress: Progress, predictor: Predictor, budget: RestartBudget, timeout: float,
                 turns: asyncio.Lock | None = None):
        """``spec_for(restarts)``: the spec of the shard's next incarnation (fresh seeds after a restart).
        ``turns``: one lock for all of a run's shards, so they take turns at a full queue (``_put``)."""
        self.index, self._spec_for = index, spec_for
        self.queue, self.progress, self.predictor = queue, progress, predictor
        self._turns = turns if turns is not None else asyncio.Lock()
        self.budget, self.timeout = budget, timeout
        self.restarts = 0
        self.stopping = False
        self._pusher: asyncio.Task | None = None
        self.name = f"shard {index}"

    async def start(self) -> None:
        """Start the shard and wait until its agents are made (outside the run's clock)."""
        try:
            await self._start_one()
        except ShardDied as died:
            raise ShardError(f"{self.name} did not start: its {self.kind} {died.how}") from None

    async def _start_one(self) -> None:
        spec = self._spec_for(self.restarts)
        await self._spawn(spec)
        self._pusher = asyncio.get_running_loop().create_task(self._push_weights(spec.version),
                                                              name=f"asynca3c-{self.name}-weights")
        if self.stopping:
            self._send_stop()

    def _remote_error(self, exc: BaseException, remote_tb: str) -> BaseException:
        if not isinstance(exc, Asynca3cError):  # a bug or an env's own error, not a refusal: where it happened
            exc.add_note(f"in {self.name}'s {self.kind}:\n{remote_tb}")
        return exc

    async def _push_weights(self, sent: int) -> None:
        """Each newer version the trainer's acting copy adopts, to the shard; versions that arrive while
        the last one is still on its way are skipped for the newest."""
        predictor = self.predictor
        changed = predictor.watch()
        try:
            while True:
                if predictor.version <= sent:
                    await changed.wait()
                    changed.clear()
                    continue
                await self._ready_for_weights()
                sent = predictor.version  # read after any wait: the arrays below are the live weights
                if not await self._send_weights(sent, [t.detach().numpy() for t in predictor.model.shipped()]):
                    return  # the shard is gone; the reader restarts it
        finally:
            predictor.unwatch(changed)

    async def run(self) -> None:
        """Put the shard's messages on the queue and its reports into the run's progress until it has
        stopped; restart it whenever it dies."""
        try:
            while True:
                try:
                    await self._serve()
                    return
                except ShardDied as died:
                    if self.stopping or not await self._restart(died):
                        return
        finally:
            await self._stop_pusher()
            await self._release()

    async def _restart(self, died: ShardDied) -> bool:
        """A new incarnation in place of the dead one (False: the run is stopping, none is started); a
        replacement that dies before it is ready is one more death (``budget`` raises once they are too many)."""
        while True:
            await self._stop_pusher()
            await self._release()
            if self.stopping:  # asked to stop while the dead one was released: nothing to restart for
                return False
            self.budget.spend(f"{self.name}'s {self.kind} {died.how}")
            self.restarts += 1
            try:
                await self._start_one()
                return True
            except ShardDied as again:
                died = again

    async def _serve(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.timeout):
                    frames = await self._next_frames()
            except TimeoutError:
                await self._kill()
                raise ShardDied(f"sent nothing for {self.timeout:g} s (shard_timeout)") from None
            pusher = self._pusher
            if pusher is not None and pusher.done() and not pusher.cancelled() and pusher.exception() is not None:
                raise pusher.exception()  # type: ignore[misc]  # a bug in sending weights: not to be hidden
            for frame in frames:
                kind = frame[0]
                if kind == "msg":
                    self._apply(frame[2])
                    await self._put(frame[1])
                elif kind == "report":
                    self._apply(frame[1])
                elif kind == "stopped":
                    self._apply(frame[1])
                    return
                elif kind == "error":
                    self._apply(frame[3])
                    raise self._remote_error(frame[1], frame[2])

    async def _put(self, message) -> None:
        """``message`` onto the run's queue, in turn with the other shards. A bare ``Queue.put`` is not fair:
        a reader whose next message is already in its pipe takes each freed place before the woken reader of
        another shard runs, and starved that shard for tens of seconds once frames no longer went through
        the pipe. ``asyncio.Lock`` is first come, first served."""
        async with self._turns:
            await self.queue.put(message)

    def _apply(self, report: ShardReport) -> None:
        report.apply(self.progress)

    def stop(self) -> None:
        """The shard's agents finish their step and it sends what it holds; then ``run`` returns."""
        self.stopping = True
        self._send_stop()

    async def _stop_pusher(self) -> None:
        pusher, self._pusher = self._pusher, None
        if pusher is not None:
            pusher.cancel()
            await asyncio.gather(pusher, return_exceptions=True)

    async def aclose(self) -> None:
        """Release the shard now (also when ``run`` never started)."""
        self.stopping = True
        await self._stop_pusher()
        await self._release()

    # --- how a shard is reached: the subclass's part ---------------------------------------------

    async def _spawn(self, spec: ShardSpec) -> None:
        """Start a shard from ``spec`` and wait until it is ready; ShardDied if it dies first, the shard's
        own error if it refuses."""
        raise NotImplementedError

    async def _next_frames(self) -> list[tuple]:
        """The next frames the shard sent (at least one); ShardDied when it is gone."""
        raise NotImplementedError

    async def _ready_for_weights(self) -> None:
        """Until the shard may be sent another version (at once, unless the subclass bounds what is unread)."""

    async def _send_weights(self, version: int, weights: list[np.ndarray]) -> bool:
        """Hand the shard ``weights``; False when it is gone."""
        raise NotImplementedError

    def _send_stop(self) -> None:
        raise NotImplementedError

    async def _kill(self) -> None:
        """End the shard at once (it stopped answering)."""
        raise NotImplementedError

    async def _release(self) -> None:
        """Let the shard end and free what it held (idempotent)."""
        raise NotImplementedError


class ProcessShard(ShardClient):
    """An acting shard in a worker process (``python -m asynca3c.runtime.shard_worker``) on this machine."""

    kind = "process"

    def __init__(self, *args, frames: FrameRing | None = None, weights: WeightsBoard | None = None, **kw):
        """``frames``: the run's ring for segments' frames (this shard writes into its grant); ``weights``:
        the run's board of published weights; None: through the pipe."""
        super().__init__(*args, **kw)
        self._proc: WorkerProcess | None = None
        self._frames, self._board = frames, weights
        self._unread: list[int] = []  # board slots sent to this incarnation that it has not answered for
        self._answered = asyncio.Event()
        self.pipe_weight_sends = 0  # versions pickled through the pipe

    @property
    def pid(self) -> int | None:
        """The worker process's (a new one after a restart)."""
        return None if self._proc is None else self._proc.pid

    async def _spawn(self, spec: ShardSpec) -> None:
        blob = pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL)
        proc = self._proc = await spawn_worker("asynca3c.runtime.shard_worker")
        try:
            proc.stdin.write(encode_frame(("init", list(sys.path), blob)))
            await proc.stdin.drain()
        except (ConnectionError, RuntimeError):
            pass  # it died at once: the read below says how
        try:
            async with asyncio.timeout(START_TIMEOUT):
                reply = await read_frame_async(proc.stdout)
        except TimeoutError:
            proc.kill()
            raise ShardDied(f"was not ready within {START_TIMEOUT:.0f} s") from None
        if reply is None:
            raise ShardDied(f"ended before it was ready ({exit_status(await proc.wait())})")
        if reply[0] == "error":
            self._apply(reply[3])
            raise self._remote_error(reply[1], reply[2])

    async def _next_frames(self) -> list[tuple]:
        proc = self._proc
        assert proc is not None and proc.stdout is not None  # spawned, with a stdout pipe
        frame = await read_frame_async(proc.stdout)
        if frame is None:
            raise ShardDied(f"died ({exit_status(await proc.wait())})")
        if frame[0] == "weights-read":
            slot = frame[1]
            self._unread.remove(slot)
            assert self._board is not None  # answers come only for weights sent through the board
            self._board.read(slot)
            self._answered.set()
            return []
        if frame[0] == "msg" and frame[3] is not None:  # a segment whose frames wait in a slot
            message, report, ref = frame[1:]
            assert self._frames is not None  # a shard writes into slots only when it was given some
            obs = self._frames.take(ref)
            self._send(("release", ref.slot))
            frame = ("msg", dataclasses.replace(message, obs=obs), report)
        return [frame]

    async def _ready_for_weights(self) -> None:
        """Until this shard has answered for all but ``MAX_UNREAD - 1`` of the versions it was sent: one that
        is slow to answer (its answers wait behind queued segments) or hangs holds back only its own."""
        while len(self._unread) >= MAX_UNREAD:
            self._answered.clear()
            await self._answered.wait()

    async def _send_weights(self, version: int, weights: list[np.ndarray]) -> bool:
        proc = self._proc
        if proc is None or proc.stdin is None:
            return False
        board = self._board
        packed = None if board is None else board.publish(version, weights)
        if packed is not None:
            assert board is not None
            frame: tuple = ("shared-weights", version, packed)
            board.sent_to_one(packed)
            self._unread.append(packed.ref.slot)
        else:
            frame = ("weights", version, weights)
            self.pipe_weight_sends += 1
        try:
            proc.stdin.write(encode_frame(frame))
            await proc.stdin.drain()
        except (ConnectionError, RuntimeError):  # a closed transport raises RuntimeError
            return False
        return True

    def _send_stop(self) -> None:
        self._send(("stop",))

    def _send(self, frame: tuple) -> None:
        """A small frame to the shard, without waiting for the pipe (lost if the shard is gone)."""
        proc = self._proc
        if proc is None or proc.returncode is not None or proc.stdin is None:
            return
        try:
            proc.stdin.write(encode_frame(frame))
        except (ConnectionError, RuntimeError):
            pass

    async def _kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()

    async def _release(self) -> None:
        """Let the process exit on the end of its input, killed if it does not soon; the weights it had not
        answered for are let go (it will not read them now)."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None:
                await self._close(proc)
        finally:
            if self._board is not None:  # only now: a process still alive could read a reused slot
                for slot in self._unread:
                    self._board.read(slot)
            self._unread.clear()

    async def _close(self, proc: WorkerProcess) -> None:
        # What the shard still sends is read and dropped, so a shard blocked writing to a full pipe can
        # finish and exit within the grace.
        discard = asyncio.get_running_loop().create_task(_read_to_end(proc.stdout))
        try:
            await close_worker(proc, grace=EXIT_GRACE)
        finally:
            discard.cancel()
