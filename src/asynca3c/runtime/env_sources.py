"""Where a run's environments come from: gymnasium ids, or a factory of async environments.

The trainer's one choice between the two kinds lives here as an object: how the
spaces are read, how an agent's environments are made, and how the final fresh
episodes are played. The trainer, the run and the agents never ask which kind
they have.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, Protocol

from asynca3c.core.actions import Actions
from asynca3c.core.envs import EnvSpec, ObsEncoder, describe_env, inspect_env, is_async_env, make_vector_env
from asynca3c.core.evaluation import play
from asynca3c.errors import EnvError
from asynca3c.runtime.agent import Agent, SegmentAgent
from asynca3c.runtime.async_agents import AsyncEnvAgents, AsyncEnvs, evaluate_async_envs
from asynca3c.runtime.predictor import Predictor


class EnvSource(Protocol):
    """A kind of environment the trainer can act in."""

    #: The spaces and threshold, once known (after ``describe``).
    spec: EnvSpec | None
    #: What ``env_faults='auto'`` means for this kind: restart faulty environments (True) or fail.
    restarts_by_default: bool
    #: ``make_agent`` blocks (gym.make, vector envs): the run calls it in a thread, off the loop.
    blocking_setup: bool

    async def describe(self) -> EnvSpec:
        """The spaces of the environments this source makes; EnvError when asynca3c cannot train on them."""
        ...

    def make_agent(self, num_envs: int, *, actions: Actions, segment_length: int | None, n_step: int, gamma: float,
                   **agent_args: Any) -> Agent | SegmentAgent | AsyncEnvAgents:
        """An agent acting in ``num_envs`` new environments of this source: it ships segments of
        ``segment_length`` steps (vtrace), or n-step samples when that is None."""
        ...

    async def evaluate(self, predictor: Predictor, episodes: int, seed: int, returns: list[float], *,
                       max_steps: int, step_timeout: float, on_fault: Callable[[str], None]) -> None:
        """Play ``episodes`` fresh episodes without epsilon, appending their returns to ``returns`` (so a
        cancelled evaluation keeps the episodes it finished); each is cut off after ``max_steps``."""
        ...


class GymEnvs:
    """Gymnasium environments by id, stepped as numpy-vectorized batches (one agent, one vector env)."""

    restarts_by_default = False
    blocking_setup = True

    def __init__(self, env_id: str, env_kwargs: dict | None = None, wrapper: str = ""):
        self.env_id, self.env_kwargs, self.wrapper = env_id, dict(env_kwargs or {}), wrapper
        self.spec: EnvSpec | None = None

    async def describe(self) -> EnvSpec:
        """Makes one env in a thread (gym.make can take a while) to read its spaces; bad ids fail here."""
        if self.spec is None:
            self.spec = await asyncio.to_thread(inspect_env, self.env_id, self.env_kwargs, wrapper=self.wrapper)
        return self.spec

    def make_agent(self, num_envs: int, *, actions: Actions, segment_length: int | None, n_step: int, gamma: float,
                   **agent_args: Any) -> Agent | SegmentAgent:
        def make_envs():
            return make_vector_env(self.env_id, num_envs, self.env_kwargs, wrapper=self.wrapper, training=True)

        agent_args.pop("step_timeout", None)  # vector envs step synchronously; a hang cannot be cut off
        if segment_length is not None:
            return SegmentAgent(envs=make_envs(), make_envs=make_envs, actions=actions,
                                segment_length=segment_length, **agent_args)
        return Agent(envs=make_envs(), make_envs=make_envs, actions=actions, n_step=n_step, gamma=gamma,
                     **agent_args)

    async def evaluate(self, predictor: Predictor, episodes: int, seed: int, returns: list[float], *,
                       max_steps: int, step_timeout: float, on_fault: Callable[[str], None]) -> None:
        """In a thread, with the last published weights; a cancel stops it after the current step."""
        cancelled = threading.Event()

        def work() -> None:
            steps = play(predictor.model, self.env_id, episodes, self.env_kwargs, seed, False, 128, returns,
                         max_steps=max_steps, spec=self.spec, env_wrapper=self.wrapper)
            try:
                for _ in steps:
                    if cancelled.is_set():
                        return
            finally:
                steps.close()  # a stopped evaluation appends the episodes that ended

        thread = asyncio.ensure_future(asyncio.to_thread(work))
        try:
            await asyncio.shield(thread)
        finally:
            cancelled.set()
            if not thread.done():  # cancelled: the thread stops after its current step; wait for it
                await asyncio.wait([thread])


class AsyncEnvFactory:
    """Environments whose ``reset`` and ``step`` are coroutines, one coroutine each (see ``async_agents``)."""

    restarts_by_default = True
    blocking_setup = False  # the factory may need the running loop (a client session, a connection)

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
        agent_args.pop("work", None)  # async environments step on the loop: no threads to give them
        return AsyncEnvAgents(envs=[self.factory() for _ in range(num_envs)], make_env=self.factory, n_step=n_step,
                              gamma=gamma, segment_length=segment_length, **agent_args)

    async def evaluate(self, predictor: Predictor, episodes: int, seed: int, returns: list[float], *,
                       max_steps: int, step_timeout: float, on_fault: Callable[[str], None]) -> None:
        assert self.spec is not None
        await evaluate_async_envs(self.factory, predictor, ObsEncoder(self.spec), episodes, seed, returns,
                                  max_steps=max_steps, step_timeout=step_timeout, on_fault=on_fault)
