"""An acting shard: a share of a run's agents, their environments and a predictor with an acting copy of
the weights, on an event loop of its own. Weights (with their version) come in; messages for the learner
and what happened (steps, episodes, faults) go out.

A ``Shard`` does not know how it is reached: ``shard_worker`` drives one in a
worker process over pipes, and anything else that can call ``set_weights``
and take what ``send`` is given (a Ray actor) can drive the same class. It
counts in a progress of its own; ``take_report`` hands over what changed
since the last report, which the trainer adds to the run's progress. Epsilon
decays over this shard's own steps, a ``1/shards`` share of the run's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from asynca3c.config import Config
from asynca3c.core.actions import for_spec as actions_for
from asynca3c.core.envs import EnvSpec, ObsEncoder
from asynca3c.core.model import build_network
from asynca3c.core.rewards import TrainingReward
from asynca3c.runtime.acting import AnyAgent, make_agents
from asynca3c.runtime.env_sources import EnvSource
from asynca3c.runtime.faults import FaultPolicy, first_error
from asynca3c.runtime.predictor import Predictor
from asynca3c.runtime.progress import Progress
from asynca3c.runtime.shm import WriterGrant


@dataclass
class ShardSpec:
    """Everything that builds one shard, as picklable values (it crosses to the worker process)."""

    config: dict
    source: EnvSource  # gymnasium ids, or an async env factory (pickled by reference)
    env_spec: EnvSpec
    network: dict  # describe_network's
    weights: dict  # the acting copy's state dict now (CPU tensors)
    version: int
    index: int  # which shard (0-based)
    agents: list[int]  # the exploring agents it runs
    seeds: list[int]  # one per agent
    eval_seed: int | None  # the evaluation agent's, on the shard that runs it
    #: its share of the run's env steps so far: where its epsilon schedule resumes after a restart or resume
    start_steps: int = 0
    #: its slots of the trainer's shared-memory ring for segments' frames (None: frames go by pipe)
    frames: WriterGrant | None = None


@dataclass
class ShardReport:
    """What a shard saw since its last report: added to the run's counters by the trainer."""

    env_steps: int = 0
    episodes: list[tuple[float, bool, int]] = field(default_factory=list)  # (return, judged, length)
    env_faults: int = 0

    def apply(self, progress: Progress) -> None:
        progress.env_steps += self.env_steps
        progress.env_faults += self.env_faults
        for ret, judged, length in self.episodes:
            progress.add_episode(ret, judged, length)


class _ShardProgress(Progress):
    """The shard's own counters; ended episodes wait here for the next report (the run judges them)."""

    def __init__(self, start_steps: int = 0) -> None:
        super().__init__(1, None)
        self.env_steps = start_steps
        self.ended: list[tuple[float, bool, int]] = []

    def add_episode(self, ret: float, judged: bool, length: int = 0) -> None:
        self.ended.append((ret, judged, length))


class Shard:
    """A share of the agents and an acting copy of the network, driven by whoever holds it."""

    def __init__(self, spec: ShardSpec, send: Callable[[Any, ShardReport], Awaitable[None]]):
        """``send(message, report)`` ships an agent's message (a segment or an n-step sample batch) with
        the report of what happened up to it; it should wait while the receiver is full."""
        cfg = self.config = Config.from_dict(spec.config)
        self.spec, self._send = spec, send
        torch.set_num_threads(cfg.torch_threads or 1)
        torch.manual_seed(spec.seeds[0] if spec.seeds else cfg.seed)
        model = build_network(spec.network)
        model.load_state_dict(spec.weights)
        self.actions = actions_for(spec.env_spec)
        self.predictor = Predictor(model, self.actions, seed=(spec.seeds[0] if spec.seeds else cfg.seed) + 7)
        self.predictor.version = spec.version
        self.progress = _ShardProgress(spec.start_steps)
        restart = cfg.env_faults == "restart" or (cfg.env_faults == "auto" and spec.source.restarts_by_default)
        self.faults = FaultPolicy(restart, cfg.max_env_faults_per_minute, self.progress)
        self.agents: list[AnyAgent] = []
        self._reported_steps, self._reported_faults = spec.start_steps, 0

    async def start(self) -> None:
        """Make the agents and their environments (off the loop where that blocks)."""
        make = self._make_agents
        self.agents = await asyncio.to_thread(make) if self.spec.source.blocking_setup else make()

    def _make_agents(self) -> list[AnyAgent]:
        cfg, spec = self.config, self.spec
        shards = max(1, cfg.shards)
        return make_agents(cfg, spec.source, actions=self.actions, encoder=ObsEncoder(spec.env_spec),
                           policy=self.predictor, progress=self.progress, faults=self.faults,
                           reward=TrainingReward(cfg.reward_scale, None, cfg.reward_clip), outbox=self,
                           indices=spec.agents,
                           seeds=spec.seeds, eval_seed=spec.eval_seed, epsilon_steps=cfg.epsilon_steps // shards)

    async def put(self, message: Any) -> None:
        """The agents' outbox: each message leaves with the report of what happened up to it."""
        await self._send(message, self.take_report())

    def take_report(self) -> ShardReport:
        progress = self.progress
        report = ShardReport(progress.env_steps - self._reported_steps, progress.ended,
                             progress.env_faults - self._reported_faults)
        self._reported_steps, self._reported_faults = progress.env_steps, progress.env_faults
        progress.ended = []
        return report

    def set_weights(self, weights: list[np.ndarray], version: int) -> None:
        self.predictor.set_weights(weights, version)

    def stop(self) -> None:
        """Every agent finishes its current step; then ``run`` returns."""
        for agent in self.agents:
            agent.stop()

    async def run(self) -> None:
        """Act until stopped; an agent's failure (a fault the policy does not survive) is raised."""
        predictor = asyncio.get_running_loop().create_task(self.predictor.run(), name="asynca3c-shard-predictor")
        try:
            async with asyncio.TaskGroup() as tg:
                for i, agent in enumerate(self.agents):
                    tg.create_task(agent.run(), name=f"asynca3c-shard-agent-{i}")
        except BaseExceptionGroup as group:
            error = first_error(group)
            if error is None:
                raise
            raise error from None
        finally:
            predictor.cancel()
            await asyncio.gather(predictor, return_exceptions=True)

    async def aclose(self) -> None:
        for agent in self.agents:
            await agent.aclose()
