"""Evaluation episodes: a policy without epsilon, on fresh environments.

A policy is either an asynca3c ``ActorCritic`` (actions sampled from its
softmax, or its most likely action) or any callable mapping a batch of raw
observations to a batch of actions, so other libraries' agents are judged by
exactly the same episodes.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

import numpy as np
import torch

from asynca3c.core.actions import for_spec as actions_for
from asynca3c.core.envs import EnvSpec, ObsEncoder, inspect_env, make_vector_env
from asynca3c.core.model import ActorCritic

#: A batch of raw observations -> a batch of actions.
PolicyFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class EvalResult:
    returns: list[float]

    def stats(self) -> dict[str, float]:
        """Mean, std, min and max of the returns."""
        r = np.asarray(self.returns, dtype=np.float64)
        return {"mean": float(r.mean()), "std": float(r.std()), "min": float(r.min()), "max": float(r.max())}

    @property
    def mean(self) -> float:
        return self.stats()["mean"]

    @property
    def std(self) -> float:
        return self.stats()["std"]


def evaluate(policy: ActorCritic | PolicyFn, env_id: str, episodes: int = 100, *, env_kwargs: dict | None = None,
             seed: int = 0, deterministic: bool = False, chunk: int = 128, max_steps: int = 0,
             env_wrapper: str = "") -> EvalResult:
    """Play ``episodes`` episodes (each on its own env, so short ones are not over-counted).

    A model's actions are sampled from its policy (``deterministic``: its most
    likely action); a callable decides for itself. ``max_steps`` cuts off
    episodes of environments without a time limit of their own (0: never). ``env_wrapper``: the
    observation wrapper the policy was trained with (``Config.env_wrapper``).
    """
    returns: list[float] = []
    for _ in play(policy, env_id, episodes, env_kwargs, seed, deterministic, chunk, returns, max_steps=max_steps,
                  env_wrapper=env_wrapper):
        pass
    return EvalResult(returns)


class ModelPolicy:
    """An asynca3c network as a batch policy: sampled actions, or the most likely ones (within a Box's
    bounds). A recurrent network's state is kept per row between calls; ``reset`` starts new episodes
    (players call it at each one's start: every row of a batch plays its first episode together)."""

    def __init__(self, model: ActorCritic, spec: EnvSpec, deterministic: bool, rng: np.random.Generator):
        self.model, self.deterministic, self.rng = model, deterministic, rng
        self.encode, self.actions = ObsEncoder(spec), actions_for(spec)
        self.state: torch.Tensor | None = None

    def reset(self) -> None:
        self.state = None

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out, _, self.state = self.model.step(torch.from_numpy(self.encode(raw)), self.state)
            params = self.model.action_params(out).numpy()
        chosen = self.actions.greedy(params) if self.deterministic else self.actions.choose(params, 0.0, self.rng)[0]
        return self.actions.to_env(chosen)


def model_policy(model: ActorCritic, spec: EnvSpec, deterministic: bool, rng: np.random.Generator) -> ModelPolicy:
    """The model as a batch policy (see ``ModelPolicy``)."""
    return ModelPolicy(model, spec, deterministic, rng)


def play(policy: ActorCritic | PolicyFn, env_id: str, episodes: int, env_kwargs: dict | None, seed: int,
         deterministic: bool, chunk: int, returns: list[float], *, max_steps: int = 0,
         spec: EnvSpec | None = None, env_wrapper: str = "") -> Generator[None, None, None]:
    """Plays the episodes, appending their returns; yields after every vector step, so a caller can
    hand control back (to its event loop, or to a cancel check) between steps. An episode still running
    after ``max_steps`` steps is cut off there (0: never), with the return it has; when the caller stops
    early, the episodes that already ended are appended."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if isinstance(policy, ActorCritic):
        spec = spec or inspect_env(env_id, env_kwargs, wrapper=env_wrapper)
        policy = model_policy(policy, spec, deterministic, np.random.default_rng(seed))
    elif not callable(policy):
        raise TypeError(f"policy must be an ActorCritic or a callable (observations -> actions), "
                        f"got {type(policy).__name__}")
    for first in range(0, episodes, chunk):
        k = min(chunk, episodes - first)
        envs = make_vector_env(env_id, k, env_kwargs, wrapper=env_wrapper)
        ep_ret, running = np.zeros(k), np.ones(k, dtype=bool)
        if isinstance(policy, ModelPolicy):
            policy.reset()
        try:
            raw, _ = envs.reset(seed=seed + first)
            steps = 0
            while running.any() and not (max_steps and steps >= max_steps):
                raw, rew, term, trunc, _ = envs.step(np.asarray(policy(raw)))
                ep_ret += np.where(running, rew, 0.0)
                running &= ~(term | trunc)
                steps += 1
                yield
            returns.extend(ep_ret.tolist())
        except GeneratorExit:  # the caller stopped early: keep the episodes that ended
            returns.extend(ep_ret[~running].tolist())
            raise
        finally:
            envs.close()
