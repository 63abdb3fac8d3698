"""Where a run's environments come from: gymnasium ids, or a factory of async environments.

The trainer's one choice between the two kinds lives here as an object: how the
spaces are read, how an agent's environments are made, and how the final fresh
episodes are played. The trainer, the run and the agents never ask which kind
they have.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from asynca3c.core.actions import Actions
from asynca3c.core.envs import EnvSpec, ObsEncoder, describe_env, inspect_env, is_async_env, make_vector_env
from asynca3c.core.evaluation import EvalResult, play
from asynca3c.errors import EnvError
from asynca3c.runtime.agent import Agent, SegmentAgent
from asynca3c.runtime.async_agents import AsyncEnvAgents, AsyncEnvs, evaluate_async_envs
from asynca3c.runtime.predictor import Predictor


class EnvSource(Protocol):
    """A kind of environment the trainer can act in."""

    #: The spaces and threshold, once known (gym ids: at construction; async factories: after ``describe``).
    spec: EnvSpec | None

    async def describe(self) -> EnvSpec:
        """The spaces of the environments this source makes; EnvError when asynca3c cannot train on them."""
        ...

    def make_agent(self, num_envs: int, *, actions: Actions, segment_length: int | None, n_step: int, gamma: float,
                   **agent_args: Any) -> Agent | SegmentAgent | AsyncEnvAgents:
        """An agent acting in ``num_envs`` new environments of this source: it ships segments of
        ``segment_length`` steps (vtrace), or n-step samples when that is None."""
        ...

    async def evaluate(self, predictor: Predictor, episodes: int, seed: int) -> EvalResult:
        """Returns of ``episodes`` fresh episodes without epsilon, played on the running loop."""
        ...


class GymEnvs:
    """Gymnasium environments by id, stepped as numpy-vectorized batches (one agent, one vector env)."""

    def __init__(self, env_id: str, env_kwargs: dict | None = None):
        self.env_id, self.env_kwargs = env_id, dict(env_kwargs or {})
        self.spec: EnvSpec | None = inspect_env(env_id, self.env_kwargs)  # bad ids fail at construction

    async def describe(self) -> EnvSpec:
        assert self.spec is not None
        return self.spec

    def make_agent(self, num_envs: int, *, actions: Actions, segment_length: int | None, n_step: int, gamma: float,
                   **agent_args: Any) -> Agent | SegmentAgent:
        envs = make_vector_env(self.env_id, num_envs, self.env_kwargs)
        if segment_length is not None:
            return SegmentAgent(envs=envs, actions=actions, segment_length=segment_length, **agent_args)
        return Agent(envs=envs, actions=actions, n_step=n_step, gamma=gamma, **agent_args)

    async def evaluate(self, predictor: Predictor, episodes: int, seed: int) -> EvalResult:
        """With the last published weights, yielding to the loop after every vector step."""
        returns: list[float] = []
        for _ in play(predictor.model, self.env_id, episodes, self.env_kwargs, seed, False, 128, returns):
            await asyncio.sleep(0)
        return EvalResult(returns)


class AsyncEnvFactory:
    """Environments whose ``reset`` and ``step`` are coroutines, one coroutine each (see ``async_agents``)."""

    def __init__(self, factory: Callable[[], object], name: str):
        self.factory, self.name = factory, name
        self.spec: EnvSpec | None = None

    async def describe(self) -> EnvSpec:
        """Makes one probe environment to read its spaces, and closes it."""
        if self.spec is None:
            probe = self.factory()
            try:
                if not is_async_env(probe):
                    raise EnvError(f"env_factory made {type(probe).__name__}, whose reset and step are not "
                                   "coroutines; pass gymnasium environments by id (Config.env) instead")
                self.spec = describe_env(probe, self.name)
            finally:
                await AsyncEnvs([probe]).aclose()
        return self.spec

    def make_agent(self, num_envs: int, *, actions: Actions, segment_length: int | None, n_step: int, gamma: float,
                   **agent_args: Any) -> AsyncEnvAgents:
        return AsyncEnvAgents(envs=[self.factory() for _ in range(num_envs)], n_step=n_step, gamma=gamma,
                              segment_length=segment_length, **agent_args)

    async def evaluate(self, predictor: Predictor, episodes: int, seed: int) -> EvalResult:
        assert self.spec is not None
        return EvalResult(await evaluate_async_envs(self.factory, predictor, ObsEncoder(self.spec), episodes, seed))
