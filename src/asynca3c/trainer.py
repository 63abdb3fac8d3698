"""Trainer: owns a run's loop-side lifecycle (tasks, queue, executor) and its result."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import csv
import json
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from asynca3c import checkpoint
from asynca3c.actions import for_spec as actions_for
from asynca3c.agent import Agent, EpsilonSchedule
from asynca3c.async_agents import AsyncEnvAgents, AsyncEnvs, evaluate_async_envs
from asynca3c.config import Config, ConfigError
from asynca3c.envs import EnvError, EnvSpec, ObsEncoder, describe_env, inspect_env, is_async_env, make_vector_env
from asynca3c.evaluation import EvalResult, evaluate_async
from asynca3c.learner_pool import make_learner
from asynca3c.looplag import LoopLag
from asynca3c.model import ActorCritic
from asynca3c.optimizer import STOP, optimizer_task
from asynca3c.predictor import Predictor
from asynca3c.progress import Progress
from asynca3c.rewards import NoveltyBonus, TrainingReward
from asynca3c.tensorboard_log import TensorBoardLog

log = logging.getLogger("asynca3c")


@dataclass
class TrainResult:
    """What a run reached; ``summary.json`` holds these fields."""

    env: str
    seed: int
    device: str
    seconds: float
    env_steps: int
    steps_per_second: float
    episodes: int
    updates: int
    solved: bool
    solved_after_seconds: float | None
    solved_after_steps: int | None
    reward_threshold: float | None
    eval_window_mean_return: float
    eval_mean_return: float
    eval_std_return: float
    eval_episodes: int
    policy_lag_mean: float
    loop_lag_p99_ms: float
    loop_lag_max_ms: float
    stop_reason: str
    config: dict = field(repr=False)

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} is not available: torch sees no CUDA device; use cpu or auto")
    return torch.device(name)


class TrainerClosed(RuntimeError):
    """The trainer is not running: not started yet, or already closed."""


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
                 on_progress: Callable[[dict], None] | None = None,
                 env_factory: Callable[[], object] | None = None,
                 resume_from: str | os.PathLike | dict | None = None):
        """``env_factory``: makes one environment whose ``reset``/``step`` are coroutines (see
        ``asynca3c.async_agents``); ``config.env`` then only names the run. ``resume_from``: a
        checkpoint (a file, a run directory holding one, or what ``checkpoint.load`` returned) to
        continue: weights, optimizer state, counters, recent returns and random states; budgets then
        count the run's total, not this session's."""
        self.config = config
        if isinstance(resume_from, dict) or resume_from is None:
            self._resume = resume_from
        else:
            self._resume = checkpoint.load(resume_from)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.on_progress = on_progress
        self.env_factory = env_factory
        self.spec: EnvSpec | None = None if env_factory else inspect_env(config.env, config.env_kwargs)
        self._encode = ObsEncoder(self.spec) if self.spec else None
        if self._resume is not None and self.spec is not None:
            self._check_resume()
        self.device = resolve_device(config.device)
        self._stop = asyncio.Event()
        self._stop_reason = "budget"
        self.model: ActorCritic | None = None  # the acting copy, once running
        self.learner = None  # ProcessLearner or ThreadLearner, once running
        self.loop_lag = LoopLag()
        self._predictor: Predictor | None = None
        self._agents: list[Agent] = []
        self._tasks: list[asyncio.Task] = []  # predictor and lag watcher: live until closed
        self._main: asyncio.Task | None = None
        self._closed = False
        self._subscribers: list[asyncio.Queue] = []
        self._host: asyncio.Task | None = None
        self._host_waiting = 0  # the host is awaiting one of our calls: errors reach it there
        self._host_cancelled = False
        self._tensorboard = None  # TensorBoardLog, with config.tensorboard
        self._actions = None  # DiscreteActions or GaussianActions, once the env's spaces are known
        self._novelty: NoveltyBonus | None = None  # visit counts, with config.novelty_bonus

    @property
    def threshold(self) -> float | None:
        t = self.config.reward_threshold
        if not math.isnan(t):
            return t
        return None if self.spec is None else self.spec.reward_threshold

    # --- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Trainer:
        await self.start()
        return self

    async def __aexit__(self, exc_type, exc, tb) -> bool:
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
                raise error from None  # we cancelled the body to surface this error
        if error is not None and exc is None:
            raise error
        return False

    async def start(self) -> None:
        """Start the learner, agents, optimizers and predictor on the running loop."""
        if self._main is not None or self._closed:
            raise RuntimeError("this Trainer was already started; a Trainer runs once, make a new one")
        cfg = self.config
        if self.env_factory is not None:
            await self._inspect_factory()
        if cfg.until_solved and self.threshold is None:
            raise ConfigError(f"until_solved needs a reward threshold: {cfg.env!r} has none in its "
                              "spec; set reward_threshold")
        if cfg.novelty_bonus:
            self._novelty = NoveltyBonus.for_spec(self.spec, cfg.novelty_bins, cfg.novelty_bonus, seed=cfg.seed)
        if cfg.tensorboard:
            if self.run_dir is None:
                raise ConfigError("tensorboard=True needs a run directory (Trainer(..., run_dir=...))")
            self._tensorboard = TensorBoardLog(self.run_dir / "tensorboard", cfg)
        loop = asyncio.get_running_loop()
        self._host = asyncio.current_task()
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(cfg.seed)
        self._actions = actions_for(self.spec)
        bounds = (self.spec.obs_low, self.spec.obs_high) if cfg.normalize_obs and self.spec.obs_low else None
        model = ActorCritic(self.spec.obs_dim, self.spec.n_actions, cfg.hidden, self._actions.continuous, bounds)
        resume = self._resume
        if resume is not None:
            checkpoint.load_weights(model, resume["model"])
        self._predictor = Predictor(copy.deepcopy(model), self._actions, seed=cfg.seed + 7)
        self.model = self._predictor.model
        self.learner = make_learner(model, cfg, self.device)
        queue: asyncio.Queue = asyncio.Queue(cfg.queue_size)
        progress = Progress(cfg.solve_window, self.threshold,
                            on_solved=(lambda: self.request_stop("solved")) if cfg.until_solved else None)
        if resume is not None:
            progress.restore(resume["counters"])
            self._predictor.version = int(resume["version"])
        try:
            await self.learner.start()  # outside the clock: a worker process imports torch
            if resume is not None:
                await self.learner.load({k: resume[k] for k in ("model", "optimizer", "version")})
            self._agents = self._make_agents(self._predictor, queue, progress)
            if resume is not None:
                self._restore_rng(resume["rng"])
                if self._novelty is not None and "novelty_counts" in resume:
                    self._novelty.restore(resume["novelty_counts"].numpy())
        except BaseException:
            await self.aclose()
            raise
        self._tasks = [loop.create_task(self._predictor.run(), name="asynca3c-predictor"),
                       loop.create_task(self.loop_lag.watch(), name="asynca3c-loop-lag")]
        self._progress, self._queue = progress, queue
        self._main = loop.create_task(self._train(queue, progress), name="asynca3c-trainer")
        self._main.add_done_callback(self._on_main_done)

    async def _inspect_factory(self) -> None:
        probe = self.env_factory()
        try:
            if not is_async_env(probe):
                raise EnvError(f"env_factory made {type(probe).__name__}, whose reset and step are not "
                               "coroutines; pass gymnasium environments by id (Config.env) instead")
            self.spec = describe_env(probe, self.config.env)
        finally:
            await AsyncEnvs([probe]).aclose()
        self._encode = ObsEncoder(self.spec)
        if self._resume is not None:
            self._check_resume()

    def _check_resume(self) -> None:
        cfg = self.config
        checkpoint.check_matches(self._resume, cfg.env, self.spec.obs_dim, self.spec.n_actions, cfg.hidden)

    def request_stop(self, reason: str = "requested") -> None:
        """Ask the run to end: agents stop, the queue drains, the last update lands."""
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop.set()

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
        changes = {}
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
        if self._predictor is not None:
            self._predictor.fail(TrainerClosed("the trainer is closed"))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._publish(_END)
        if self._tensorboard is not None:
            self._tensorboard.close()
        try:
            if self.learner is not None:
                await self.learner.aclose()
        finally:
            for agent in self._agents:
                if isinstance(agent.envs, AsyncEnvs):
                    await agent.envs.aclose()
                else:
                    agent.envs.close()

    def _on_main_done(self, task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        if self._predictor is not None:
            self._predictor.fail(error)
        self._publish(error)
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

    async def act(self, obs, *, deterministic: bool = False) -> int | list[float]:
        """An action for one observation from the live policy (batched with the agents' requests):
        an int for a Discrete action space, a list of floats (within the bounds) for a Box."""
        if self._predictor is None or self._closed:
            raise TrainerClosed("the trainer is not running: act() works inside 'async with Trainer(...)'")
        row = self._observation_row(obs)
        actions = self._actions
        async with self._host_call():
            if deterministic:
                params, _ = await self._predictor.infer(row)
                action = actions.greedy(params)[0]
            else:
                action, _, _ = await self._predictor.choose(row, 0.0)
        return actions.to_python(actions.to_env(np.asarray(action)))

    async def metrics(self) -> AsyncIterator[dict]:
        """Progress rows every ``log_interval`` seconds until training ends (the last one final)."""
        if self._main is None:
            raise TrainerClosed("the trainer was not started: use 'async with Trainer(...)'")
        if self._main.done():
            if not self._main.cancelled() and self._main.exception() is not None:
                raise self._main.exception()
            return
        inbox: asyncio.Queue = asyncio.Queue(maxsize=1000)
        self._subscribers.append(inbox)
        try:
            while True:
                async with self._host_call():
                    item = await inbox.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._subscribers.remove(inbox)

    def snapshot(self) -> dict:
        """The current progress row (what ``metrics`` yields), at any moment after ``start``."""
        if self._main is None:
            raise TrainerClosed("the trainer was not started: use 'async with Trainer(...)'")
        return self._row(self._progress, self._queue)

    def novelty_counts(self) -> np.ndarray | None:
        """Visits per cell of the novelty bonus's grid (a copy); None without ``novelty_bonus``."""
        return None if self._novelty is None else self._novelty.state()

    def _row(self, progress: Progress, queue: asyncio.Queue) -> dict:
        row = progress.snapshot()
        row.update(queue_depth=queue.qsize(), loop_lag_p99_ms=self.loop_lag.p99_ms(),
                   loop_lag_max_ms=self.loop_lag.max_ms)
        return row

    def _observation_row(self, obs) -> np.ndarray:
        spec = self.spec
        if spec.obs_kind == "discrete":
            low, high = spec.obs_start, spec.obs_start + spec.obs_dim
            if not (isinstance(obs, (int, np.integer)) and low <= obs < high):
                raise ValueError(f"observation {obs!r} is not allowed: {spec.env_id} expects an integer "
                                 f"in [{low}, {high})")
            return self._encode(np.array([obs]))
        arr = np.asarray(obs, dtype=np.float32)
        if arr.size != spec.obs_dim:
            raise ValueError(f"observation of shape {arr.shape} is not allowed: {spec.env_id} expects "
                             f"{spec.obs_dim} numbers")
        return arr.reshape(1, spec.obs_dim)

    def _publish(self, item) -> None:
        for inbox in self._subscribers:
            if inbox.full():
                inbox.get_nowait()  # a slow reader loses the oldest row, never the end
            inbox.put_nowait(item)

    # --- the run itself --------------------------------------------------------------------------

    async def _train(self, queue: asyncio.Queue, progress: Progress) -> TrainResult:
        cfg, agents, predictor, learner = self.config, self._agents, self._predictor, self.learner
        progress.start = time.perf_counter()
        try:
            async with asyncio.TaskGroup() as tg:
                agent_tasks = [tg.create_task(a.run(), name=f"asynca3c-agent-{i}") for i, a in enumerate(agents)]
                opt_tasks = [
                    tg.create_task(optimizer_task(queue, learner, predictor, progress,
                                                  cfg.min_batch, cfg.max_batch), name=f"asynca3c-optimizer-{i}")
                    for i in range(cfg.optimizers)
                ]
                monitor = tg.create_task(self._monitor(progress, queue), name="asynca3c-monitor")
                await self._stop.wait()
                for a in agents:
                    a.stop()
                await asyncio.gather(*agent_tasks)
                for _ in opt_tasks:
                    await queue.put(STOP)
                await asyncio.gather(*opt_tasks)
                seconds = progress.elapsed()
                monitor.cancel()
        except BaseExceptionGroup as group:
            # One failure (an env that raised, a bad batch) is the error the caller should see.
            errors = [e for e in group.exceptions if not isinstance(e, asyncio.CancelledError)]
            if len(errors) == 1:
                raise errors[0] from None
            raise
        row = self._emit(progress, queue)
        state = None
        if self.run_dir is not None:  # before the final evaluation: a SIGTERM grace period is short
            state = await self._save_checkpoint(progress)
        final = None
        eval_seed = cfg.seed + 1_000_003
        if cfg.final_eval_episodes and self.env_factory is not None:
            final = EvalResult(await evaluate_async_envs(self.env_factory, predictor, self._encode,
                                                         cfg.final_eval_episodes, eval_seed))
        elif cfg.final_eval_episodes:  # fresh episodes without epsilon, with the last published weights
            final = await evaluate_async(predictor.model, cfg.env, cfg.final_eval_episodes,
                                         env_kwargs=cfg.env_kwargs, seed=eval_seed)
        result = TrainResult(
            env=cfg.env, seed=cfg.seed, device=str(self.device), seconds=seconds,
            env_steps=progress.env_steps, steps_per_second=progress.env_steps / seconds if seconds else 0.0,
            episodes=progress.episodes, updates=progress.updates, solved=progress.solved,
            solved_after_seconds=progress.solved_after_seconds, solved_after_steps=progress.solved_after_steps,
            reward_threshold=self.threshold, eval_window_mean_return=progress.eval_mean(),
            eval_mean_return=final.mean if final else math.nan,
            eval_std_return=final.std if final else math.nan,
            eval_episodes=len(final.returns) if final else 0,
            policy_lag_mean=progress.policy_lag_mean(),
            loop_lag_p99_ms=row["loop_lag_p99_ms"], loop_lag_max_ms=row["loop_lag_max_ms"],
            stop_reason=self._stop_reason, config=cfg.to_dict(),
        )
        if self.run_dir is not None:
            await asyncio.to_thread(self._write_run_dir, result, state)
        self._publish(_END)
        return result

    def _make_agents(self, predictor: Predictor, queue: asyncio.Queue, progress: Progress) -> list:
        """The exploring agents (epsilon per agent) and the evaluation agent (no epsilon)."""
        cfg = self.config
        # A resumed run's environments start from new seeds, not from its first episodes again.
        entropy = [cfg.seed, progress.env_steps] if progress.env_steps else cfg.seed
        seeds = np.random.SeedSequence(entropy).generate_state(cfg.agents + 1)
        common = dict(encoder=self._encode, policy=predictor, n_step=cfg.n_step, gamma=cfg.gamma, progress=progress,
                      reward=TrainingReward(cfg.reward_scale, self._novelty))

        def make(n: int, **kw) -> Agent | AsyncEnvAgents:
            if self.env_factory is None:
                return Agent(envs=make_vector_env(cfg.env, n, cfg.env_kwargs), actions=self._actions, **common, **kw)
            return AsyncEnvAgents(envs=[self.env_factory() for _ in range(n)], **common, **kw)

        agents = [make(cfg.envs_per_agent, queue=queue, epsilon=EpsilonSchedule(*cfg.epsilon(i), cfg.epsilon_steps),
                       seed=int(seeds[i])) for i in range(cfg.agents)]
        if cfg.eval_envs:
            agents.append(make(cfg.eval_envs, queue=queue if cfg.eval_agent_trains else None,
                               epsilon=EpsilonSchedule(0.0, 0.0, 0), seed=int(seeds[-1]), evaluation=True))
        return agents

    async def _monitor(self, progress: Progress, queue: asyncio.Queue) -> None:
        """Enforce the budget and report progress every ``log_interval`` seconds."""
        cfg = self.config
        next_report = progress.elapsed() + cfg.log_interval  # a resumed run's clock starts where it stopped
        next_save = progress.elapsed() + cfg.save_every
        while True:
            await asyncio.sleep(min(0.02, cfg.log_interval))
            t = progress.elapsed()
            if cfg.seconds and t >= cfg.seconds:
                self.request_stop("seconds")
            if cfg.steps and progress.env_steps >= cfg.steps:
                self.request_stop("steps")
            if t >= next_report:
                next_report += cfg.log_interval
                self._emit(progress, queue)
            if cfg.save_every and self.run_dir is not None and t >= next_save:
                await self._save_checkpoint(progress)
                next_save = progress.elapsed() + cfg.save_every

    def _emit(self, progress: Progress, queue: asyncio.Queue) -> dict:
        row = self._row(progress, queue)
        log.info("steps=%d steps/s=%.0f episodes=%d eval=%.1f", row["env_steps"], row["steps_per_second"],
                 row["episodes"], row["eval_return_mean"])
        if self.on_progress is not None:
            self.on_progress(row)
        self._publish(row)
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            path = self.run_dir / "progress.csv"
            new = not path.exists()
            with path.open("a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(row))
                if new:
                    w.writeheader()
                w.writerow(row)
        if self._tensorboard is not None:
            self._tensorboard.write(row)
        return row

    def _network(self) -> dict:
        """What rebuilds the network: its shape and the environment it acts in."""
        spec = self.spec
        return {"env": self.config.env, "obs_dim": spec.obs_dim, "n_actions": spec.n_actions,
                "hidden": list(self.config.hidden), "continuous": self._actions.continuous}

    async def _save_checkpoint(self, progress: Progress) -> dict:
        """The run's state to RUN_DIR/checkpoint.pt, atomically (serialized in a thread, off the loop);
        returns the learner state it saved."""
        cfg = self.config
        state = await self.learner.state()
        payload = {
            **state, "config": cfg.to_dict(), "counters": progress.state(),
            "network": self._network(),
            "rng": {"torch": torch.get_rng_state(), "predictor": checkpoint.numpy_rng_state(self._predictor.rng),
                    "agents": [checkpoint.numpy_rng_state(a.rng) for a in self._rng_agents()]},
        }
        if self._novelty is not None:
            payload["novelty_counts"] = torch.from_numpy(self._novelty.state())
        await asyncio.to_thread(checkpoint.save, self.run_dir / checkpoint.CHECKPOINT_FILE, payload)
        return state

    def _rng_agents(self) -> list[Agent]:
        """The agents that draw their own random numbers (async-env groups draw through the predictor)."""
        return [a for a in self._agents if isinstance(a, Agent)]

    def _restore_rng(self, rng: dict) -> None:
        torch.set_rng_state(rng["torch"])
        checkpoint.set_numpy_rng_state(self._predictor.rng, rng["predictor"])
        # A run resumed with another number of agents keeps what fits.
        for agent, state in zip(self._rng_agents(), rng["agents"]):
            checkpoint.set_numpy_rng_state(agent.rng, state)

    def _write_run_dir(self, result: TrainResult, state: dict) -> None:
        d = self.run_dir
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(self.config.to_json() + "\n")
        torch.save({"model": state["model"], "network": self._network(), "env_kwargs": self.config.env_kwargs},
                   d / "model.pt")
        (d / "summary.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")


#: Put in metric subscribers' inboxes when training ended.
_END = object()


def run_on_uvloop(coro):
    """Run a coroutine on a fresh uvloop loop (asyncio's where uvloop is missing).

    A private loop for synchronous callers (scripts, the CLI); no loop policy is
    installed, so hosts that embed a Trainer keep whatever loop they run.
    """
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - platforms without uvloop
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def train(config: Config, *, run_dir: str | os.PathLike | None = None,
          on_progress: Callable[[dict], None] | None = None) -> TrainResult:
    """Train from a script: a Trainer on a private uvloop loop; returns its result."""
    return run_on_uvloop(Trainer(config, run_dir=run_dir, on_progress=on_progress).run())
