"""A run's agents, made from its settings: the one recipe the loop's own agents and every shard's follow.

Exploring agent ``i`` gets the epsilon schedule ``config.epsilon(i)``; the
evaluation agent (``eval_envs``) acts without epsilon and trains only when
``eval_agent_trains``. Where the agents run (this loop, a shard process) is
the caller's choice: it says which agents it wants and gives them seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from asynca3c.config import Config
from asynca3c.core.actions import Actions
from asynca3c.core.envs import ObsEncoder
from asynca3c.core.rewards import TrainingReward
from asynca3c.runtime.agent import Agent, EpsilonSchedule, Outbox, SegmentAgent
from asynca3c.runtime.async_agents import AsyncEnvAgents
from asynca3c.runtime.env_sources import EnvSource
from asynca3c.runtime.faults import FaultPolicy
from asynca3c.runtime.predictor import Predictor
from asynca3c.runtime.progress import Progress

AnyAgent = Agent | SegmentAgent | AsyncEnvAgents


def agent_seeds(cfg: Config, env_steps: int, *more: int) -> list[int]:
    """One seed per exploring agent, then the evaluation agent's. A resumed run (``env_steps`` > 0) and a
    restarted shard (``more``: its index and restart count) start from new seeds, not from their first
    episodes again."""
    entropy = [cfg.seed, env_steps, *more] if env_steps or more else cfg.seed
    return [int(s) for s in np.random.SeedSequence(entropy).generate_state(cfg.agents + 1)]


def make_agents(cfg: Config, source: EnvSource, *, actions: Actions, encoder: ObsEncoder, policy: Predictor,
                progress: Progress, faults: FaultPolicy, reward: TrainingReward, outbox: Outbox,
                indices: Sequence[int], seeds: Sequence[int], eval_seed: int | None,
                epsilon_steps: int | None = None, **extra: Any) -> list[AnyAgent]:
    """The exploring agents ``indices`` (seeded by ``seeds``, one each) and, when ``eval_seed`` is given
    and the config has ``eval_envs``, the evaluation agent. ``epsilon_steps``: the steps of
    ``progress`` over which epsilon decays (default the config's; a shard that sees a share of the
    run's steps decays over that share). Blocks while environments are made."""
    common: dict[str, Any] = dict(
        encoder=encoder, policy=policy, n_step=cfg.n_step, gamma=cfg.gamma, progress=progress, reward=reward,
        segment_length=cfg.segment_length if cfg.algorithm == "vtrace" else None,
        faults=faults, step_timeout=cfg.env_step_timeout, **extra)
    decay = cfg.epsilon_steps if epsilon_steps is None else epsilon_steps
    agents = [source.make_agent(cfg.envs_per_agent, actions=actions, queue=outbox, seed=int(seed),
                                epsilon=EpsilonSchedule(*cfg.epsilon(i), decay), name=f"agent {i}", **common)
              for i, seed in zip(indices, seeds, strict=True)]
    if cfg.eval_envs and eval_seed is not None:
        agents.append(source.make_agent(cfg.eval_envs, actions=actions,
                                        queue=outbox if cfg.eval_agent_trains else None,
                                        epsilon=EpsilonSchedule(0.0, 0.0, 0), seed=int(eval_seed),
                                        name="the evaluation agent", **common))
    return agents
