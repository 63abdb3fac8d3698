"""Trainer: owns a run's loop-side lifecycle (tasks, queue, executor) and its result."""

from __future__ import annotations

import asyncio
import copy
import csv
import json
import logging
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from asynca3c.agent import Agent, EpsilonSchedule
from asynca3c.config import Config, ConfigError
from asynca3c.envs import EnvSpec, ObsEncoder, inspect_env, make_vector_env
from asynca3c.evaluation import evaluate
from asynca3c.learner_pool import make_learner
from asynca3c.model import ActorCritic
from asynca3c.optimizer import STOP, optimizer_task
from asynca3c.predictor import Predictor
from asynca3c.progress import Progress

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


class Trainer:
    """A3C training on the running event loop.

    ``await Trainer(config).run()`` trains until the budget in ``config`` is
    spent (or it is solved, with ``until_solved``) and returns a TrainResult.
    ``request_stop()`` ends it early and gracefully.
    """

    def __init__(self, config: Config, *, run_dir: str | os.PathLike | None = None,
                 on_progress: Callable[[dict], None] | None = None):
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.on_progress = on_progress
        self.spec: EnvSpec = inspect_env(config.env, config.env_kwargs)
        threshold = config.reward_threshold
        self.threshold = self.spec.reward_threshold if math.isnan(threshold) else threshold
        if config.until_solved and self.threshold is None:
            raise ConfigError(f"until_solved needs a reward threshold: {config.env!r} has none in its "
                              "spec; set reward_threshold")
        self.device = resolve_device(config.device)
        self._stop = asyncio.Event()
        self._stop_reason = "budget"
        self.model: ActorCritic | None = None  # the acting copy, once running
        self.learner = None  # ProcessLearner or ThreadLearner, once running

    def request_stop(self, reason: str = "requested") -> None:
        """Ask the run to end: agents stop, the queue drains, the last update lands."""
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop.set()

    async def run(self) -> TrainResult:
        cfg = self.config
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(cfg.seed)
        model = ActorCritic(self.spec.obs_dim, self.spec.n_actions, cfg.hidden)
        predictor = Predictor(copy.deepcopy(model))
        self.model = predictor.model
        learner = self.learner = make_learner(model, cfg, self.device)
        queue: asyncio.Queue = asyncio.Queue(cfg.queue_size)
        progress = Progress(cfg.solve_window, self.threshold,
                            on_solved=(lambda: self.request_stop("solved")) if cfg.until_solved else None)
        agents: list[Agent] = []
        helper = ThreadPoolExecutor(1, thread_name_prefix="asynca3c-eval")
        try:
            await learner.start()  # outside the clock: a worker process imports torch
            agents = self._make_agents(predictor, queue, progress)
            progress.start = time.perf_counter()
            async with asyncio.TaskGroup() as tg:
                predictor_task = tg.create_task(predictor.run(), name="asynca3c-predictor")
                agent_tasks = [tg.create_task(a.run(), name=f"asynca3c-agent-{i}") for i, a in enumerate(agents)]
                opt_tasks = [
                    tg.create_task(optimizer_task(queue, learner, predictor, progress,
                                                  cfg.min_batch, cfg.max_batch), name=f"asynca3c-optimizer-{i}")
                    for i in range(cfg.optimizers)
                ]
                monitor = tg.create_task(self._monitor(progress), name="asynca3c-monitor")
                await self._stop.wait()
                for a in agents:
                    a.stop()
                await asyncio.gather(*agent_tasks)
                for _ in opt_tasks:
                    await queue.put(STOP)
                await asyncio.gather(*opt_tasks)
                seconds = progress.elapsed()
                predictor_task.cancel()
                monitor.cancel()
            self._emit(progress)
            state = await learner.state() if self.run_dir is not None else None
            final = await asyncio.get_running_loop().run_in_executor(helper, self._final_eval, predictor.model)
        except BaseExceptionGroup as group:
            # One failure (an env that raised, a bad batch) is the error the caller should see.
            errors = [e for e in group.exceptions if not isinstance(e, asyncio.CancelledError)]
            if len(errors) == 1:
                raise errors[0] from None
            raise
        finally:
            await learner.aclose()
            helper.shutdown(wait=True)
            for a in agents:
                a.envs.close()
        result = TrainResult(
            env=cfg.env, seed=cfg.seed, device=str(self.device), seconds=seconds,
            env_steps=progress.env_steps, steps_per_second=progress.env_steps / seconds if seconds else 0.0,
            episodes=progress.episodes, updates=progress.updates, solved=progress.solved,
            solved_after_seconds=progress.solved_after_seconds, solved_after_steps=progress.solved_after_steps,
            reward_threshold=self.threshold, eval_window_mean_return=progress.eval_mean(),
            eval_mean_return=final.mean if final else math.nan,
            eval_std_return=final.std if final else math.nan,
            eval_episodes=len(final.returns) if final else 0,
            policy_lag_mean=progress.policy_lag_mean(), stop_reason=self._stop_reason,
            config=cfg.to_dict(),
        )
        if self.run_dir is not None:
            self._write_run_dir(result, state)
        return result

    def _make_agents(self, predictor: Predictor, queue: asyncio.Queue, progress: Progress) -> list[Agent]:
        cfg = self.config
        encoder = ObsEncoder(self.spec)
        seeds = np.random.SeedSequence(cfg.seed).generate_state(cfg.agents + 1)
        agents = []
        for i in range(cfg.agents):
            start, end = cfg.epsilon(i)
            agents.append(Agent(
                envs=make_vector_env(cfg.env, cfg.envs_per_agent, cfg.env_kwargs), encoder=encoder,
                policy=predictor, queue=queue, n_step=cfg.n_step, gamma=cfg.gamma,
                epsilon=EpsilonSchedule(start, end, cfg.epsilon_steps), progress=progress, seed=int(seeds[i])))
        if cfg.eval_envs:
            agents.append(Agent(
                envs=make_vector_env(cfg.env, cfg.eval_envs, cfg.env_kwargs), encoder=encoder,
                policy=predictor, queue=queue if cfg.eval_agent_trains else None, n_step=cfg.n_step,
                gamma=cfg.gamma, epsilon=EpsilonSchedule(0.0, 0.0, 0), progress=progress,
                seed=int(seeds[-1]), evaluation=True))
        return agents

    async def _monitor(self, progress: Progress) -> None:
        """Enforce the budget and report progress every ``log_interval`` seconds."""
        cfg = self.config
        next_report = cfg.log_interval
        while True:
            await asyncio.sleep(min(0.02, cfg.log_interval))
            t = progress.elapsed()
            if cfg.seconds and t >= cfg.seconds:
                self.request_stop("seconds")
            if cfg.steps and progress.env_steps >= cfg.steps:
                self.request_stop("steps")
            if t >= next_report:
                next_report += cfg.log_interval
                self._emit(progress)

    def _emit(self, progress: Progress) -> None:
        row = progress.snapshot()
        log.info("steps=%d steps/s=%.0f episodes=%d eval=%.1f", row["env_steps"], row["steps_per_second"],
                 row["episodes"], row["eval_return_mean"])
        if self.on_progress is not None:
            self.on_progress(row)
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            path = self.run_dir / "progress.csv"
            new = not path.exists()
            with path.open("a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(row))
                if new:
                    w.writeheader()
                w.writerow(row)

    def _final_eval(self, acting: ActorCritic):
        """Fresh episodes without epsilon, with the last published weights."""
        cfg = self.config
        if not cfg.final_eval_episodes:
            return None
        return evaluate(acting, cfg.env, cfg.final_eval_episodes, env_kwargs=cfg.env_kwargs,
                        seed=cfg.seed + 1_000_003)

    def _write_run_dir(self, result: TrainResult, state: dict) -> None:
        d = self.run_dir
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(self.config.to_json() + "\n")
        torch.save({"model": state["model"], "obs_dim": self.spec.obs_dim, "n_actions": self.spec.n_actions,
                    "hidden": list(self.config.hidden), "env": self.config.env}, d / "model.pt")
        (d / "summary.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")


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
