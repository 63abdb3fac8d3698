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

``ThreadLearner`` keeps the learner in this process, behind a thread executor
and a lock, for hosts that cannot start processes.
"""

from __future__ import annotations

import asyncio
import collections
import pickle
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
import torch

from asynca3c.config import Config
from asynca3c.core.learner import Learner, LearnerSpec
from asynca3c.core.messages import SampleBatch, Segment, StepStats
from asynca3c.core.model import ActorCritic
from asynca3c.errors import LearnerError
from asynca3c.runtime.wire import HEADER, encode_frame


class LearnerClient(Protocol):
    """What the loop side needs of a learner, wherever its steps run."""

    pid: int | None  # the worker process's, or None when steps run in this process

    async def start(self) -> None: ...

    async def step(self, batch: SampleBatch) -> tuple[StepStats, Sequence[np.ndarray | torch.Tensor]]:
        """One minimize step; its stats and the new weights (CPU)."""
        ...

    async def learn(self, batch: Segment) -> tuple[StepStats, Sequence[np.ndarray | torch.Tensor]]:
        """Epochs of minibatch steps with V-trace targets on a batch of segments; stats and new weights."""
        ...

    async def state(self) -> dict:
        """Model and optimizer state (CPU tensors) and the version."""
        ...

    async def load(self, state: dict) -> None: ...

    async def aclose(self) -> None: ...


def make_learner(model: ActorCritic, config: Config, device: torch.device) -> LearnerClient:
    spec = LearnerSpec.of(model, config, device)
    return ProcessLearner(spec) if config.learner == "process" else ThreadLearner(spec, config.optimizers)


class ProcessLearner:
    """The learner in a worker process; requests are answered in order."""

    def __init__(self, spec: LearnerSpec):
        self._spec = spec
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task | None = None
        self._pending: collections.deque[asyncio.Future] = collections.deque()
        self._dead: BaseException | None = None
        self.pid: int | None = None

    async def start(self) -> None:
        """Start the worker and build the network there (about a second: it imports torch)."""
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "asynca3c.runtime.learner_worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        self.pid = self._proc.pid
        self._reader = asyncio.get_running_loop().create_task(self._read_replies(), name="asynca3c-learner-io")
        try:
            await self._request("init", self._spec)
        except BaseException:
            await self.aclose()
            raise

    async def step(self, batch: SampleBatch) -> tuple[StepStats, list[np.ndarray]]:
        """One minimize step; its stats and the new weights."""
        return await self._request("step", batch)

    async def learn(self, batch: Segment) -> tuple[StepStats, list[np.ndarray]]:
        """Epochs of minibatch steps on a batch of segments; their stats and the new weights."""
        return await self._request("learn", batch)

    async def state(self) -> dict:
        """Model and optimizer state (CPU tensors) and the version."""
        return await self._request("state", None)

    async def load(self, state: dict) -> None:
        await self._request("load", state)

    async def _request(self, op: str, arg):
        if self._dead is not None:
            raise LearnerError(str(self._dead))
        fut = asyncio.get_running_loop().create_future()
        self._pending.append(fut)
        # Started with a stdin pipe; closed only after the run's last request.
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(encode_frame((op, arg)))
        await self._proc.stdin.drain()
        return await fut

    async def _read_replies(self) -> None:
        proc = self._proc
        assert proc is not None  # started by start() before this task
        out = proc.stdout
        assert out is not None  # started with a stdout pipe
        try:
            while True:
                (size,) = HEADER.unpack(await out.readexactly(HEADER.size))
                reply = pickle.loads(await out.readexactly(size))
                fut = self._pending.popleft()
                if fut.done():  # its caller was cancelled; the reply is dropped
                    continue
                if reply[0] == "ok":
                    fut.set_result(reply[1])
                else:
                    _, exc, remote_tb = reply
                    exc.add_note(f"in the learner process:\n{remote_tb}")
                    fut.set_exception(exc)
        except (asyncio.IncompleteReadError, ConnectionError):
            code = await proc.wait()
            self._dead = LearnerError(f"the learner process exited with code {code}")
            while self._pending:
                fut = self._pending.popleft()
                if not fut.done():
                    fut.set_exception(LearnerError(str(self._dead)))

    async def aclose(self) -> None:
        """Ask the worker to exit and wait for it (killed if it does not within 5 s)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.returncode is None:
                try:
                    assert proc.stdin is not None  # started with a stdin pipe
                    proc.stdin.write(encode_frame(("close", None)))
                    proc.stdin.close()
                except (ConnectionError, RuntimeError):
                    pass
                try:
                    await asyncio.wait_for(proc.wait(), 5.0)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
        except asyncio.CancelledError:
            if proc.returncode is None:
                proc.kill()
            raise
        finally:
            if self._reader is not None:
                self._reader.cancel()
                try:
                    await self._reader
                except asyncio.CancelledError:
                    pass
                self._reader = None


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

    async def step(self, batch: SampleBatch) -> tuple[StepStats, list[torch.Tensor]]:
        assert self.learner is not None, "start() first"
        return await self._call(self.learner.step, batch)

    async def learn(self, batch: Segment) -> tuple[StepStats, list[torch.Tensor]]:
        assert self.learner is not None, "start() first"
        return await self._call(self.learner.learn, batch)

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
