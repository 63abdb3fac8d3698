"""Evaluation episodes: the policy without epsilon, on fresh environments."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from asynca3c.agent import sample_actions
from asynca3c.envs import ObsEncoder, inspect_env, make_vector_env
from asynca3c.model import ActorCritic


@dataclass
class EvalResult:
    returns: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        return float(np.std(self.returns))

    @property
    def min(self) -> float:
        return float(np.min(self.returns))

    @property
    def max(self) -> float:
        return float(np.max(self.returns))


def evaluate(model: ActorCritic, env_id: str, episodes: int = 100, *, env_kwargs: dict | None = None,
             seed: int = 0, deterministic: bool = False, chunk: int = 128) -> EvalResult:
    """Play ``episodes`` episodes (each on its own env, so short ones are not over-counted).

    Actions are sampled from the policy (``deterministic``: its most likely action).
    """
    returns: list[float] = []
    for _ in _play(model, env_id, episodes, env_kwargs, seed, deterministic, chunk, returns):
        pass
    return EvalResult(returns)


async def evaluate_async(model: ActorCritic, env_id: str, episodes: int = 100, *, env_kwargs: dict | None = None,
                         seed: int = 0, deterministic: bool = False, chunk: int = 128) -> EvalResult:
    """``evaluate`` on the running loop, yielding to it after every step."""
    returns: list[float] = []
    for _ in _play(model, env_id, episodes, env_kwargs, seed, deterministic, chunk, returns):
        await asyncio.sleep(0)
    return EvalResult(returns)


def _play(model, env_id, episodes, env_kwargs, seed, deterministic, chunk, returns: list[float]) -> Iterator[None]:
    """Plays the episodes, appending their returns; yields after every vector step."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    encode = ObsEncoder(inspect_env(env_id, env_kwargs))
    rng = np.random.default_rng(seed)
    for first in range(0, episodes, chunk):
        k = min(chunk, episodes - first)
        envs = make_vector_env(env_id, k, env_kwargs)
        try:
            raw, _ = envs.reset(seed=seed + first)
            ep_ret, running = np.zeros(k), np.ones(k, dtype=bool)
            while running.any():
                with torch.inference_mode():
                    logits, _ = model(torch.from_numpy(encode(raw)))
                if deterministic:
                    actions = logits.argmax(-1).numpy()
                else:
                    actions = sample_actions(torch.softmax(logits, -1).numpy(), rng)
                raw, rew, term, trunc, _ = envs.step(actions)
                ep_ret += np.where(running, rew, 0.0)
                running &= ~(term | trunc)
                yield
            returns.extend(ep_ret.tolist())
        finally:
            envs.close()
