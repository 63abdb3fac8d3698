"""Trainer: the lifecycle a host sees — start, stop, wait, errors like a TaskGroup's, the live policy
(``act``) and the metrics stream — around one ``TrainingRun``."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import os
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Literal

import numpy as np
import torch

from asynca3c.config import Config
from asynca3c.core.envs import EnvSpec
from asynca3c.core.messages import MetricsRow
from asynca3c.errors import ConfigError, TrainerClosed
from asynca3c.outputs import checkpoint
from asynca3c.outputs.run_dir import RunDirectory
from asynca3c.outputs.tensorboard import TensorBoardLog
from asynca3c.runtime.env_sources import AsyncEnvFactory, EnvSource, GymEnvs
from asynca3c.runtime.looplag import LoopLag
from asynca3c.runtime.metrics import MetricsHub, log_row
from asynca3c.runtime.run import StopRequest, TrainingRun, TrainResult, encoder_for
from asynca3c.runtime.uvloop_runner import run_on_uvloop

__all__ = ["TrainResult", "Trainer", "TrainerClosed", "resolve_device", "train"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} is not available: torch sees no CUDA device; use cpu or auto")
    return torch.device(name)


#: Recurrent states ``act`` keeps, one per session key.
MAX_SESSIONS = 100_000


class Trainer:
    """A3C training on the running event loop (asyncio or uvloop: whichever the host runs).

    Embedded::

        async with Trainer(config) as trainer:   # tasks start on the running loop
            action = await trainer.act(obs)       # the live policy, batched with the agents
            async for row in trainer.metrics(): ...
            result = await trainer.stop()         # graceful: agents stop, queue drains, last update lands

    or in one call: ``await Trainer(config).run(seconds=30)``. Like a TaskGroup,
    a failure in any agent or optimizer cancels the body of the ``async with``
    and is raised from it (and from ``act``, ``metrics``, ``wait`` and ``stop``
    at once). After training ends (budget, solved, stop) ``act`` keeps answering
    with the final policy until the block is left.
    """

    def __init__(self, config: Config, *, run_dir: str | os.PathLike | None = None,
                 on_progress: Callable[[MetricsRow], None] | None = None,
                 env_factory: Callable[[], object] | None = None,
                 resume_from: str | os.PathLike | dict | None = None, overwrite: bool = False):
        """``env_factory``: makes one environment whose ``reset``/``step`` are coroutines (see
        ``asynca3c.runtime.async_agents``); ``config.env`` then only names the run. ``resume_from``: a
        checkpoint (a file, a run directory holding one, or what ``checkpoint.load`` returned) to
        continue: weights, optimizer state, counters, recent returns and random states; budgets then
        count the run's total, not this session's. ``run_dir`` may hold another run only when resuming
        it or with ``overwrite`` (its files are removed first).

        Cheap: nothing blocking happens here. ``start`` makes the environments, the network and the
        learner, in threads where they would block the loop."""
        if env_factory is not None and config.deterministic:
            raise ConfigError("deterministic=True is not allowed with env_factory: async environments step "
                              "concurrently, in no fixed order; use a gymnasium id (Config.env)")
        if env_factory is not None and config.env_wrapper:
            raise ConfigError(f"env_wrapper={config.env_wrapper!r} is not allowed with env_factory: wrappers apply "
                              "to gymnasium ids (Config.env); wrap the factory's environments instead")
        self.config = config
        self._sessions: collections.OrderedDict[Hashable, np.ndarray] = collections.OrderedDict()
        self._resume_from = resume_from
        self._resume: dict | None = None
        self._overwrite = overwrite
        self.run_dir = RunDirectory(run_dir) if run_dir is not None else None
        self.on_progress = on_progress
        self.source: EnvSource = AsyncEnvFactory(env_factory, config.env) if env_factory is not None \
            else GymEnvs(config.env, config.env_kwargs, config.env_wrapper)
        self.device = resolve_device(config.device)
        self._stop = StopRequest()
        self.loop_lag = LoopLag()
        self._run: TrainingRun | None = None
        self._tasks: list[asyncio.Task] = []  # predictor and lag watcher: live until closed
        self._main: asyncio.Task | None = None
        self._closed = False
        self._metrics = MetricsHub()
        self._host: asyncio.Task | None = None
        self._host_waiting = 0  # the host is awaiting one of our calls: errors reach it there
        self._host_cancelled = False
        self._tensorboard: TensorBoardLog | None = None

    @property
    def spec(self) -> EnvSpec | None:
        """The environment's spaces and threshold (an async factory's: once started)."""
        return self.source.spec

    @property
    def threshold(self) -> float | None:
        t = self.config.reward_threshold
        if not math.isnan(t):
            return t
        return None if self.spec is None else self.spec.reward_threshold

    @property
    def model(self):
        """The acting copy of the network, once running."""
        return None if self._run is None else self._run.predictor.model

    @property
    def learner(self):
        """The learner client (``pid`` is its worker process's), once running."""
        return None if self._run is None else self._run.learner

    # --- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Trainer:
        await self.start()
        return self

    async def __aexit__(self, exc_type, exc, tb) -> Literal[False]:
        main = self._main
        self._host_waiting += 1  # from here on errors surface below, not as a cancel
        try:
            if main is not None and not main.done():
                if exc is None:
                    self.request_stop("exit")
                else:
                    main.cancel()
            if main is not None:
                await asyncio.wait([main])
        finally:
            await self.aclose()
        error = None if main is None or main.cancelled() else main.exception()
        if self._host_cancelled and self._host is not None:
            self._host_cancelled = False
            if self._host.uncancel() == 0 and isinstance(exc, asyncio.CancelledError):
                assert error is not None  # _host_cancelled is only set when the main task failed
                raise error from None  # we cancelled the body to surface this error
        if error is not None and exc is None:
            raise error
        return False

    async def start(self) -> None:
        """Start the learner, agents, optimizers and predictor on the running loop."""
        if self._main is not None or self._closed:
            raise RuntimeError("this Trainer was already started; a Trainer runs once, make a new one")
        cfg = self.config
        resume = self._resume_from
        if resume is not None and not isinstance(resume, dict):
            resume = await asyncio.to_thread(checkpoint.load, resume)
        self._resume = resume
        if self.run_dir is not None:  # a bad or taken run directory is refused before anything starts
            await asyncio.to_thread(self.run_dir.claim, resume=resume is not None, overwrite=self._overwrite)
        spec = await self.source.describe()
        self._check_resume()
        if cfg.until_solved and self.threshold is None:
            raise ConfigError(f"until_solved needs a reward threshold: {cfg.env!r} has none in its "
                              "spec; set reward_threshold")
        if self.run_dir is not None and self._overwrite:  # only now that the new run has passed every check
            await asyncio.to_thread(self.run_dir.clear)
        loop = asyncio.get_running_loop()
        self._host = asyncio.current_task()
        try:
            self._metrics.sinks = await asyncio.to_thread(self._sinks)  # TensorBoard's writer is slow to make
            # the model, its copy and the learner spec: built in a thread, so the host's loop keeps its beat
            run = self._run = await asyncio.to_thread(
                TrainingRun, cfg, self.source, spec, self.device, threshold=self.threshold, stop=self._stop,
                metrics=self._metrics, loop_lag=self.loop_lag, run_dir=self.run_dir, resume=self._resume)
            await run.start()
        except BaseException:
            await self.aclose()
            raise
        self._tasks = [loop.create_task(run.predictor.run(), name="asynca3c-predictor"),
                       loop.create_task(self.loop_lag.watch(), name="asynca3c-loop-lag")]
        self._main = loop.create_task(self._train(run), name="asynca3c-trainer")
        self._main.add_done_callback(self._on_main_done)

    def _sinks(self) -> list[Callable[[MetricsRow], None]]:
        """Where each progress row goes besides the subscribers: the log, the callback, the run directory."""
        sinks: list[Callable[[MetricsRow], None]] = [log_row]
        if self.on_progress is not None:
            sinks.append(self.on_progress)
        if self.run_dir is not None:
            sinks.append(self.run_dir.append_progress)
        if self.config.tensorboard:
            if self.run_dir is None:
                raise ConfigError("tensorboard=True needs a run directory (Trainer(..., run_dir=...))")
            self._tensorboard = TensorBoardLog(self.run_dir.path / "tensorboard", self.config)
            sinks.append(self._tensorboard.write)
        return sinks

    def _check_resume(self) -> None:
        if self._resume is not None:
            spec, cfg = self.source.spec, self.config
            assert spec is not None  # only called once the source is described
            checkpoint.check_matches(self._resume, cfg.env, spec.obs_dim, spec.n_actions, cfg,
                                     encoder_for(cfg, spec), spec.obs_shape)

    def request_stop(self, reason: str = "requested") -> None:
        """Ask the run to end: agents stop, the queue drains, the last update lands."""
        self._stop(reason)

    async def stop(self) -> TrainResult:
        """End training gracefully and return its result (the same result on every call)."""
        self.request_stop()
        return await self.wait()

    async def wait(self) -> TrainResult:
        """Until training ends (budget, solved, ``stop``); its result, or the error that ended it."""
        if self._main is None:
            raise TrainerClosed("the trainer was not started: use 'async with Trainer(...)' or run()")
        async with self._host_call():
            return await asyncio.shield(self._main)

    async def run(self, *, seconds: float | None = None, steps: int | None = None,
                  until_solved: bool | None = None) -> TrainResult:
        """Start, train until the budget is spent (or solved), finish, close; the result.

        ``seconds``/``steps`` replace the config's budget (the one not given
        becomes unlimited); ``until_solved`` replaces the config's flag.
        """
        changes: dict = {}
        if seconds is not None or steps is not None:
            changes.update(seconds=seconds or 0.0, steps=steps or 0)
        if until_solved is not None:
            changes["until_solved"] = until_solved
        if changes:
            self.config = self.config.replace(**changes)
        async with self:
            return await self.wait()

    async def aclose(self) -> None:
        """Stop everything now (no graceful drain) and release the worker, executors and envs."""
        if self._closed:
            return
        self._closed = True
        if self._main is not None and not self._main.done():
            self._main.cancel()
            await asyncio.wait([self._main])
        if self._run is not None:
            self._run.predictor.fail(TrainerClosed("the trainer is closed"))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._metrics.end()
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._run is not None:
            await self._run.aclose()

    async def _train(self, run: TrainingRun) -> TrainResult:
        result = await run.train()
        self._metrics.end()
        return result

    def _on_main_done(self, task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        assert error is not None  # checked above
        if self._run is not None:
            self._run.predictor.fail(error)
        self._metrics.end(error)
        host = self._host
        if host is not None and not host.done() and not self._host_waiting and not self._closed:
            self._host_cancelled = True  # like a TaskGroup: the body stops, __aexit__ raises the error
            host.cancel()

    @contextlib.asynccontextmanager
    async def _host_call(self):
        """Marks the host as awaiting us, so a failure reaches it as the call's error, not a cancel."""
        mine = asyncio.current_task() is self._host
        self._host_waiting += mine
        try:
            yield
        finally:
            self._host_waiting -= mine

    # --- what a host calls while it trains -------------------------------------------------------

    async def act(self, obs, *, deterministic: bool = False, session: Hashable | None = None) -> int | list[float]:
        """An action for one observation from the live policy (batched with the agents' requests):
        an int for a Discrete action space, a list of floats (within the bounds) for a Box.

        A recurrent policy remembers each caller's episode under ``session`` (any hashable key, e.g.
        a client id), which it then needs: the first call of a session starts from an episode's
        initial state, each later one continues it; ``end_session(key)`` when the episode ends.
        At most ``MAX_SESSIONS`` are kept (the least recently used is forgotten). One call at a
        time per session: two overlapping calls would both continue from the same state. A
        feed-forward policy ignores ``session``."""
        run = self._run
        if run is None or self._closed:
            raise TrainerClosed("the trainer is not running: act() works inside 'async with Trainer(...)'")
        row = self._observation_row(obs)
        actions, predictor = run.actions, run.predictor
        state = None
        if predictor.recurrent:
            if session is None:
                raise ValueError("session=None is not allowed with a recurrent policy: pass session=<key> (any "
                                 "hashable naming the caller's episode) and end_session(key) when it ends")
            state = self._sessions.get(session)
        async with self._host_call():
            if deterministic:
                params, _, next_state = await predictor.infer_recurrent(row, state)
                action = actions.greedy(params)[0]
            else:
                action, _, _, next_state = await predictor.choose(row, 0.0, state)
        if next_state is not None:  # a recurrent policy's (a copy: the predictor's rows view its whole batch)
            self._sessions[session] = next_state.copy()
            self._sessions.move_to_end(session)
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return actions.to_python(actions.to_env(np.asarray(action)))

    def end_session(self, session: Hashable) -> None:
        """Forget a recurrent policy's state for ``session`` (its episode ended); unknown keys are fine."""
        self._sessions.pop(session, None)

    async def metrics(self) -> AsyncIterator[MetricsRow]:
        """Progress rows every ``log_interval`` seconds until training ends (the last one final)."""
        if self._main is None:
            raise TrainerClosed("the trainer was not started: use 'async with Trainer(...)'")
        if self._main.done():
            if not self._main.cancelled() and (error := self._main.exception()) is not None:
                raise error
            return
        async with contextlib.aclosing(self._metrics.subscribe()) as rows:
            while True:
                async with self._host_call():
                    try:
                        row = await anext(rows)
                    except StopAsyncIteration:
                        return
                yield row

    def snapshot(self) -> MetricsRow:
        """The current progress row (what ``metrics`` yields), at any moment after ``start``."""
        if self._main is None or self._run is None:
            raise TrainerClosed("the trainer was not started: use 'async with Trainer(...)'")
        return self._run.row()

    def novelty_counts(self) -> np.ndarray | None:
        """Visits per cell of the novelty bonus's grid (a copy); None without ``novelty_bonus``."""
        novelty = None if self._run is None else self._run.novelty
        return None if novelty is None else novelty.state()

    def _observation_row(self, obs) -> np.ndarray:
        spec = self.spec
        assert spec is not None  # act() runs only after start, which described the source
        if spec.obs_kind == "discrete":
            low, high = spec.obs_start, spec.obs_start + spec.obs_dim
            if not (isinstance(obs, (int, np.integer)) and low <= obs < high):
                raise ValueError(f"observation {obs!r} is not allowed: {spec.env_id} expects an integer "
                                 f"in [{low}, {high})")
            assert self._run is not None  # checked by act()
            return self._run.encode(np.array([obs]))
        if spec.obs_kind == "image":
            frames = np.asarray(obs)
            c, h, w = spec.obs_shape
            shapes = [(h, w, c)] if spec.channels_last else [(c, h, w)] + ([(h, w)] if c == 1 else [])
            if frames.dtype != np.uint8 or frames.shape not in shapes:
                raise ValueError(f"observation of shape {frames.shape} and dtype {frames.dtype} is not allowed: "
                                 f"{spec.env_id} expects a uint8 image of shape "
                                 f"{' or '.join(map(str, shapes))}, as the environment gives it")
            assert self._run is not None  # checked by act()
            return self._run.encode(frames[None])
        arr = np.asarray(obs, dtype=np.float32)
        if arr.size != spec.obs_dim:
            raise ValueError(f"observation of shape {arr.shape} is not allowed: {spec.env_id} expects "
                             f"{spec.obs_dim} numbers")
        if not np.isfinite(arr).all():
            raise ValueError(f"observation {obs!r} is not allowed: every number must be finite")
        return arr.reshape(1, spec.obs_dim)


def train(config: Config, *, run_dir: str | os.PathLike | None = None,
          on_progress: Callable[[MetricsRow], None] | None = None,
          resume_from: str | os.PathLike | dict | None = None, overwrite: bool = False) -> TrainResult:
    """Train from a script: a Trainer on a private uvloop loop; returns its result (arguments as Trainer's)."""
    return run_on_uvloop(Trainer(config, run_dir=run_dir, on_progress=on_progress, resume_from=resume_from,
                                 overwrite=overwrite).run())
