"""One training run, wired: the acting copy and its predictor, the learner client, the queue, the
progress counters and the agents; and the coroutine that trains them until stopped.

``Trainer`` owns the lifecycle a host sees (start, stop, errors, ``act``,
``metrics``); a ``TrainingRun`` is what it starts. Everything that is built here
is built before the clock starts, and everything the run owns is released by
``aclose``.
"""

from __future__ import annotations

import asyncio
import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from asynca3c.config import Config
from asynca3c.core.actions import Actions
from asynca3c.core.actions import for_spec as actions_for
from asynca3c.core.envs import EnvSpec, ObsEncoder
from asynca3c.core.evaluation import EvalResult
from asynca3c.core.messages import MetricsRow
from asynca3c.core.model import ActorCritic
from asynca3c.core.rewards import NoveltyBonus, TrainingReward
from asynca3c.outputs import checkpoint
from asynca3c.outputs.run_dir import RunDirectory
from asynca3c.runtime.agent import Agent, EpsilonSchedule, Outbox, SegmentAgent
from asynca3c.runtime.async_agents import AsyncEnvAgents
from asynca3c.runtime.env_sources import EnvSource
from asynca3c.runtime.learner_client import LearnerClient, make_learner
from asynca3c.runtime.looplag import LoopLag
from asynca3c.runtime.metrics import MetricsHub
from asynca3c.runtime.predictor import Predictor
from asynca3c.runtime.progress import Progress
from asynca3c.runtime.updates import STOP, DirectLearning, segment_update_task, update_task


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


class StopRequest:
    """The first reason given to stop a run wins; the run's main task waits on it."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.reason = "budget"

    def __call__(self, reason: str = "requested") -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()


class TrainingRun:
    """The parts of one run and the coroutine (``train``) that drives them."""

    def __init__(self, config: Config, source: EnvSource, spec: EnvSpec, device: torch.device, *,
                 threshold: float | None, stop: StopRequest, metrics: MetricsHub, loop_lag: LoopLag,
                 run_dir: RunDirectory | None, resume: dict | None):
        cfg = self.config = config
        self.source, self.spec, self.device, self.threshold = source, spec, device, threshold
        self.stop, self.metrics, self.loop_lag, self.run_dir, self.resume = stop, metrics, loop_lag, run_dir, resume
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(cfg.seed)
        self.actions: Actions = actions_for(spec)
        self.encode = ObsEncoder(spec)
        self.novelty = (NoveltyBonus.for_spec(spec, cfg.novelty_bins, cfg.novelty_bonus, seed=cfg.seed)
                        if cfg.novelty_bonus else None)
        bounds = (spec.obs_low, spec.obs_high) if cfg.normalize_obs and spec.obs_low else None
        model = ActorCritic(spec.obs_dim, spec.n_actions, cfg.hidden, self.actions.continuous, bounds)
        if resume is not None:
            checkpoint.load_weights(model, resume["model"])
        self.predictor = Predictor(copy.deepcopy(model), self.actions, seed=cfg.seed + 7)
        self.learner: LearnerClient = make_learner(model, cfg, device)
        self.queue: asyncio.Queue = asyncio.Queue(cfg.queue_size)
        self.progress = Progress(cfg.solve_window, threshold,
                                 on_solved=(lambda: stop("solved")) if cfg.until_solved else None)
        if resume is not None:
            self.progress.restore(resume["counters"])
            self.predictor.version = int(resume["version"])
        self.agents: list[Agent | SegmentAgent | AsyncEnvAgents] = []

    async def start(self) -> None:
        """Start the learner (outside the clock: a worker process imports torch) and make the agents.
        On failure the caller's ``aclose`` releases what was made."""
        resume = self.resume
        await self.learner.start()
        if resume is not None:
            await self.learner.load({k: resume[k] for k in ("model", "optimizer", "version")})
        self.agents = self._make_agents()
        if resume is not None:
            self._restore_rng(resume["rng"])
            if self.novelty is not None and "novelty_counts" in resume:
                self.novelty.restore(resume["novelty_counts"].numpy())

    async def aclose(self) -> None:
        """Release the learner (its worker process or threads) and every agent's environments."""
        try:
            await self.learner.aclose()
        finally:
            for agent in self.agents:
                await agent.aclose()

    def row(self) -> MetricsRow:
        """The current progress row."""
        return {**self.progress.row(), "queue_depth": self.queue.qsize(),
                "loop_lag_p99_ms": self.loop_lag.p99_ms(), "loop_lag_max_ms": self.loop_lag.max_ms}

    async def train(self) -> TrainResult:
        """Act and learn until stopped; then drain, checkpoint, evaluate, write the run directory."""
        cfg, progress, queue = self.config, self.progress, self.queue
        progress.start = time.perf_counter()
        try:
            async with asyncio.TaskGroup() as tg:
                agent_tasks = [tg.create_task(self._act(a), name=f"asynca3c-agent-{i}")
                               for i, a in enumerate(self.agents)]
                updates = [] if cfg.deterministic else [
                    tg.create_task(self._update_task(), name=f"asynca3c-optimizer-{i}") for i in range(cfg.optimizers)]
                monitor = tg.create_task(self._monitor(), name="asynca3c-monitor")
                await self.stop.event.wait()
                for a in self.agents:
                    a.stop()
                await asyncio.gather(*agent_tasks)
                for _ in updates:
                    await queue.put(STOP)
                await asyncio.gather(*updates)
                seconds = progress.elapsed()
                monitor.cancel()
        except BaseExceptionGroup as group:
            # The first failure (an env that raised, a bad batch) is the error the caller sees; any others
            # (two update tasks can fail on the same bad numbers) ride along as notes.
            errors = [e for e in group.exceptions if not isinstance(e, asyncio.CancelledError)]
            if not errors:
                raise
            for other in errors[1:]:
                errors[0].add_note(f"also: {type(other).__name__}: {other}")
            raise errors[0] from None
        row = self._emit()
        state = None
        if self.run_dir is not None:  # before the final evaluation: a SIGTERM grace period is short
            state = await self._save_checkpoint()
        final: EvalResult | None = None
        if cfg.final_eval_episodes:  # fresh episodes without epsilon, with the last published weights
            final = await self.source.evaluate(self.predictor, cfg.final_eval_episodes, cfg.seed + 1_000_003)
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
            stop_reason=self.stop.reason, config=cfg.to_dict(),
        )
        if self.run_dir is not None and state is not None:
            await asyncio.to_thread(self.run_dir.write_final, cfg, result.to_dict(), state["model"], self.network())
        return result

    async def _act(self, agent: Agent | SegmentAgent | AsyncEnvAgents) -> None:
        await agent.run()
        if self.config.deterministic:  # its agent stopped at the step budget: the run ends there
            self.stop("steps")

    def _update_task(self):
        cfg = self.config
        if cfg.algorithm == "vtrace":
            return segment_update_task(self.queue, self.learner, self.predictor, self.progress, cfg.batch_envs)
        return update_task(self.queue, self.learner, self.predictor, self.progress, cfg.min_batch, cfg.max_batch)

    def _make_agents(self) -> list[Agent | SegmentAgent | AsyncEnvAgents]:
        """The exploring agents (epsilon per agent) and the evaluation agent (no epsilon)."""
        cfg, progress = self.config, self.progress
        # A resumed run's environments start from new seeds, not from its first episodes again.
        entropy = [cfg.seed, progress.env_steps] if progress.env_steps else cfg.seed
        seeds = np.random.SeedSequence(entropy).generate_state(cfg.agents + 1)
        outbox: Outbox = (DirectLearning(self.learner, self.predictor, progress, cfg.batch_envs)
                          if cfg.deterministic else self.queue)
        common: dict[str, Any] = dict(
            encoder=self.encode, policy=self.predictor, n_step=cfg.n_step, gamma=cfg.gamma, progress=progress,
            reward=TrainingReward(cfg.reward_scale, self.novelty),
            segment_length=cfg.segment_length if cfg.algorithm == "vtrace" else None)
        if cfg.deterministic:
            common["step_limit"] = cfg.steps
        agents = [self.source.make_agent(cfg.envs_per_agent, actions=self.actions, queue=outbox, seed=int(seeds[i]),
                                         epsilon=EpsilonSchedule(*cfg.epsilon(i), cfg.epsilon_steps), **common)
                  for i in range(cfg.agents)]
        if cfg.eval_envs:
            agents.append(self.source.make_agent(cfg.eval_envs, actions=self.actions,
                                                 queue=outbox if cfg.eval_agent_trains else None,
                                                 epsilon=EpsilonSchedule(0.0, 0.0, 0), seed=int(seeds[-1]),
                                                 **common))
        return agents

    async def _monitor(self) -> None:
        """Enforce the budget, report progress every ``log_interval`` seconds, checkpoint every ``save_every``."""
        cfg, progress = self.config, self.progress
        next_report = progress.elapsed() + cfg.log_interval  # a resumed run's clock starts where it stopped
        next_save = progress.elapsed() + cfg.save_every
        while True:
            await asyncio.sleep(min(0.02, cfg.log_interval))
            t = progress.elapsed()
            if cfg.seconds and t >= cfg.seconds:
                self.stop("seconds")
            if cfg.steps and progress.env_steps >= cfg.steps:
                self.stop("steps")
            if t >= next_report:
                next_report += cfg.log_interval
                self._emit()
            if cfg.save_every and self.run_dir is not None and t >= next_save:
                await self._save_checkpoint()
                next_save = progress.elapsed() + cfg.save_every

    def _emit(self) -> MetricsRow:
        row = self.row()
        self.metrics.emit(row)
        return row

    def network(self) -> dict:
        """What rebuilds the network: its shape and the environment it acts in."""
        spec = self.spec
        return {"env": self.config.env, "obs_dim": spec.obs_dim, "n_actions": spec.n_actions,
                "hidden": list(self.config.hidden), "continuous": self.actions.continuous}

    async def _save_checkpoint(self) -> dict:
        """The run's state to RUN_DIR/checkpoint.pt, atomically (serialized in a thread, off the loop);
        returns the learner state it saved."""
        assert self.run_dir is not None
        state = await self.learner.state()
        payload = {
            **state, "config": self.config.to_dict(), "counters": self.progress.state(),
            "network": self.network(),
            "rng": {"torch": torch.get_rng_state(), "predictor": checkpoint.numpy_rng_state(self.predictor.rng),
                    "agents": [checkpoint.numpy_rng_state(a.rng) for a in self._rng_agents()]},
        }
        if self.novelty is not None:
            payload["novelty_counts"] = torch.from_numpy(self.novelty.state())
        await asyncio.to_thread(checkpoint.save, self.run_dir.path / checkpoint.CHECKPOINT_FILE, payload)
        return state

    def _rng_agents(self) -> list[Agent]:
        """The agents that draw their own random numbers (async-env groups draw through the predictor)."""
        return [a for a in self.agents if isinstance(a, Agent)]

    def _restore_rng(self, rng: dict) -> None:
        torch.set_rng_state(rng["torch"])
        checkpoint.set_numpy_rng_state(self.predictor.rng, rng["predictor"])
        # A run resumed with another number of agents keeps what fits.
        for agent, state in zip(self._rng_agents(), rng["agents"]):
            checkpoint.set_numpy_rng_state(agent.rng, state)
