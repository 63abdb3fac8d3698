"""The trainer's side of an acting shard in a worker process (``shard_worker``): start it, send it the
newest weights, put what its agents ship on the run's queue, and restart it when it dies.

A ``ProcessShard`` stands where an agent would on the trainer's loop (``run``,
``stop``, ``aclose``), so a run treats its shards like its agents. Reading a
shard's frames is the only work it adds to the loop: its environments, its
forward passes and its return kernels run in its own process, on another core.
The reader waits on the run's bounded queue before reading on, and the shard
waits on its pipe, so a slow learner holds shards back as it holds agents.

A shard whose process dies, or that sends nothing for ``shard_timeout``
seconds (it reports every second), is killed and started again with fresh
environment seeds and the current weights; its unsent samples are all that is
lost, and ``shard_restarts`` counts it. Restarts beyond ``max_shard_restarts``
within ten minutes (all shards together) stop the run. A shard that reports an
error (an environment fault the fault policy does not survive, an env_factory
that does not load) stops the run with that error: a restart would meet it again.
"""

from __future__ import annotations

import asyncio
import collections
import pickle
import signal
import sys
import time
from collections.abc import Callable

from asynca3c.errors import Asynca3cError, ShardError
from asynca3c.runtime.predictor import Predictor
from asynca3c.runtime.progress import Progress
from asynca3c.runtime.shard import ShardReport, ShardSpec
from asynca3c.runtime.wire import encode_frame, read_frame_async

#: Longest wait for a new shard to say it is ready (it imports torch and makes its environments).
START_TIMEOUT = 120.0
#: Longest wait for a stopping shard process to exit by itself before it is killed.
EXIT_GRACE = 5.0


class ShardDied(Exception):
    """The shard process is gone or silent; ``how`` says which."""

    def __init__(self, how: str):
        super().__init__(how)
        self.how = how


def _how(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"signal {-code}, {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


async def _read_to_end(stream: asyncio.StreamReader) -> None:
    while await stream.read(1 << 16):
        pass


class RestartBudget:
    """Restarts allowed within a window, shared by a run's shards."""

    WINDOW = 600.0

    def __init__(self, max_restarts: int, progress: Progress):
        self.max_restarts, self.progress = max_restarts, progress
        self._recent: collections.deque[float] = collections.deque()

    def spend(self, what: str) -> None:
        """Count one restart for ``what`` happened; ShardError when the budget is spent."""
        now = time.monotonic()
        recent = self._recent
        while recent and now - recent[0] > self.WINDOW:
            recent.popleft()
        if len(recent) >= self.max_restarts:
            raise ShardError(f"{what}; shard processes were lost {len(recent) + 1} times within "
                             f"{self.WINDOW / 60:.0f} minutes, stopped after {len(recent)} restarts "
                             f"(max_shard_restarts={self.max_restarts})")
        recent.append(now)
        self.progress.shard_restarts += 1


class ProcessShard:
    """One acting shard in a worker process, restarted when it dies."""

    def __init__(self, index: int, spec_for: Callable[[int], ShardSpec], *, queue: asyncio.Queue,
                 progress: Progress, predictor: Predictor, budget: RestartBudget, timeout: float):
        """``spec_for(restarts)``: the spec of the shard's next process (fresh seeds after a restart)."""
        self.index, self._spec_for = index, spec_for
        self.queue, self.progress, self.predictor = queue, progress, predictor
        self.budget, self.timeout = budget, timeout
        self.restarts = 0
        self.stopping = False
        self._proc: asyncio.subprocess.Process | None = None
        self._pusher: asyncio.Task | None = None
        self.name = f"shard {index}"

    @property
    def pid(self) -> int | None:
        """The worker process's (a new one after a restart)."""
        return None if self._proc is None else self._proc.pid

    async def start(self) -> None:
        """Start the worker and wait until its agents are made (outside the run's clock)."""
        try:
            await self._spawn()
        except ShardDied as died:
            raise ShardError(f"{self.name} did not start: its process {died.how}") from None

    async def _spawn(self) -> None:
        spec = self._spec_for(self.restarts)
        blob = pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL)
        # A session of its own, like the learner's: a Ctrl-C is the trainer's to handle, not the shard's.
        proc = self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "asynca3c.runtime.shard_worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, start_new_session=True)
        assert proc.stdin is not None and proc.stdout is not None  # started with pipes
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
            raise ShardDied(f"ended before it was ready ({_how(await proc.wait())})")
        if reply[0] == "error":
            raise self._remote_error(reply)
        self._pusher = asyncio.get_running_loop().create_task(self._push_weights(proc, spec.version),
                                                              name=f"asynca3c-{self.name}-weights")
        if self.stopping:
            self._send_stop()

    def _remote_error(self, reply) -> BaseException:
        _, exc, remote_tb = reply
        if not isinstance(exc, Asynca3cError):  # a bug or an env's own error, not a refusal: where it happened
            exc.add_note(f"in {self.name}'s process:\n{remote_tb}")
        return exc

    async def _push_weights(self, proc: asyncio.subprocess.Process, sent: int) -> None:
        """Each newer version the trainer's acting copy adopts, to the shard; versions that arrive while
        the last one is still crossing the pipe are skipped for the newest."""
        predictor = self.predictor
        changed = predictor.watch()
        assert proc.stdin is not None  # started with a stdin pipe
        try:
            while True:
                if predictor.version <= sent:
                    await changed.wait()
                    changed.clear()
                    continue
                sent = predictor.version
                frame = encode_frame(("weights", sent, [t.detach().numpy() for t in predictor.model.shipped()]))
                try:
                    proc.stdin.write(frame)
                    await proc.stdin.drain()
                except (ConnectionError, RuntimeError):
                    return  # the process is gone (a closed transport raises RuntimeError); the reader restarts it
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
                    if self.stopping:
                        return
                    await self._restart(died)
        finally:
            await self._release()

    async def _restart(self, died: ShardDied) -> None:
        """A new process in place of the dead one; a replacement that dies before it is ready is one more
        death (``budget`` raises once they are too many)."""
        while True:
            await self._release()
            self.budget.spend(f"{self.name}'s process {died.how}")
            self.restarts += 1
            try:
                await self._spawn()
                return
            except ShardDied as again:
                died = again

    async def _serve(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None  # spawned, with a stdout pipe
        while True:
            try:
                async with asyncio.timeout(self.timeout):
                    frame = await read_frame_async(proc.stdout)
            except TimeoutError:
                proc.kill()
                raise ShardDied(f"sent nothing for {self.timeout:g} s (shard_timeout)") from None
            if frame is None:
                raise ShardDied(f"died ({_how(await proc.wait())})")
            pusher = self._pusher
            if pusher is not None and pusher.done() and not pusher.cancelled() and pusher.exception() is not None:
                raise pusher.exception()  # type: ignore[misc]  # a bug in sending weights: not to be hidden
            kind = frame[0]
            if kind == "msg":
                self._apply(frame[2])
                await self.queue.put(frame[1])
            elif kind == "report":
                self._apply(frame[1])
            elif kind == "stopped":
                self._apply(frame[1])
                return
            elif kind == "error":
                raise self._remote_error(frame)

    def _apply(self, report: ShardReport) -> None:
        report.apply(self.progress)

    def stop(self) -> None:
        """The shard's agents finish their step and it sends what it holds; then ``run`` returns."""
        self.stopping = True
        self._send_stop()

    def _send_stop(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None or proc.stdin is None:
            return
        try:
            proc.stdin.write(encode_frame(("stop",)))
        except (ConnectionError, RuntimeError):
            pass

    async def _release(self) -> None:
        """Stop sending weights; let the process exit on the end of its input, killed if it does not soon."""
        pusher, self._pusher = self._pusher, None
        if pusher is not None:
            pusher.cancel()
            await asyncio.gather(pusher, return_exceptions=True)
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # What the shard still sends is read and dropped: asyncio (3.11) finishes wait() only once the
        # output pipe has closed, and a pipe nobody reads stays open.
        assert proc.stdout is not None  # started with a stdout pipe
        discard = asyncio.get_running_loop().create_task(_read_to_end(proc.stdout))
        try:
            if proc.returncode is None:
                try:
                    assert proc.stdin is not None
                    proc.stdin.close()
                except (ConnectionError, RuntimeError):
                    pass
                try:
                    await asyncio.wait_for(proc.wait(), EXIT_GRACE)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
        except asyncio.CancelledError:
            if proc.returncode is None:
                proc.kill()
            raise
        finally:
            discard.cancel()

    async def aclose(self) -> None:
        """Release the process now (also when ``run`` never started)."""
        self.stopping = True
        await self._release()
