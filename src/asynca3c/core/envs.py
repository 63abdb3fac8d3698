"""Environment creation and checks: vector envs in NEXT_STEP autoreset mode.

Everything about gymnasium that the rest of the package needs lives here: which
spaces are supported, how observations become float32 rows, and how a vector
of environments is made (the env's own numpy-vectorized version when it has
one, gymnasium's SyncVectorEnv otherwise).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from asynca3c.core.wrappers import wrap_env, wrap_vector
from asynca3c.errors import EnvError


@dataclass(frozen=True)
class EnvSpec:
    """What the network and the agents need to know about an environment."""

    env_id: str
    obs_dim: int
    n_actions: int  # width of the policy head: Discrete's n, or a Box's dimension
    obs_kind: str  # "box" or "discrete"
    reward_threshold: float | None
    obs_start: int = 0  # a Discrete observation space's first value
    obs_low: tuple[float, ...] = ()  # a Box observation space's bounds, flattened (may be infinite)
    obs_high: tuple[float, ...] = ()
    action_kind: str = "discrete"  # "discrete", or "box" (a Gaussian policy)
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()


#: What gym.make raises for an id or arguments it cannot use (and a missing package behind an id).
_MAKE_ERRORS = (gym.error.Error, ImportError, TypeError, ValueError)


def _refusal(env_id: str, kwargs: dict, e: Exception) -> EnvError:
    """The one-line EnvError for one of ``_MAKE_ERRORS`` raised by gym.make or gym.make_vec."""
    text = " ".join(str(e).split())
    if isinstance(e, (ImportError, gym.error.DependencyNotInstalled)):
        return EnvError(f"{env_id!r} needs a package that is not installed ({text}); install it or choose "
                        "another environment")
    if isinstance(e, gym.error.Error):
        return EnvError(f"unknown environment id {env_id!r}: {text}")
    return EnvError(f"bad keyword arguments {kwargs!r} for {env_id!r}: {text}" if kwargs else
                    f"{env_id!r} could not be made: {text}")


def _make_single(env_id: str, env_kwargs: dict, *, wrapper: str = "") -> gym.Env:
    """One env, with ``wrapper``'s observations."""
    try:
        env = gym.make(env_id, **env_kwargs)
    except _MAKE_ERRORS as e:
        raise _refusal(env_id, env_kwargs, e) from None
    return wrap_env(env, wrapper, env_id)


def inspect_env(env_id: str, env_kwargs: dict | None = None, *, wrapper: str = "") -> EnvSpec:
    """Make one env to read its spaces; refuse what asynca3c cannot train on."""
    env = _make_single(env_id, dict(env_kwargs or {}), wrapper=wrapper)
    try:
        return describe_env(env, env_id)
    finally:
        env.close()


def is_async_env(env) -> bool:
    """True for an environment whose ``reset`` and ``step`` are coroutines (driven by AsyncEnvAgents)."""
    return inspect.iscoroutinefunction(getattr(env, "step", None)) and \
        inspect.iscoroutinefunction(getattr(env, "reset", None))


def describe_env(env, env_id: str) -> EnvSpec:
    """The EnvSpec of an env instance (gymnasium or async); EnvError for unsupported spaces."""
    obs_space = getattr(env, "observation_space", None)
    act_space = getattr(env, "action_space", None)
    spec = getattr(env, "spec", None)
    obs_start = 0
    bounds: dict[str, Any] = {}  # EnvSpec keyword arguments
    if isinstance(obs_space, gym.spaces.Box):
        obs_dim, obs_kind = int(np.prod(obs_space.shape)), "box"
        bounds = {"obs_low": tuple(np.asarray(obs_space.low, np.float64).reshape(-1).tolist()),
                  "obs_high": tuple(np.asarray(obs_space.high, np.float64).reshape(-1).tolist())}
    elif isinstance(obs_space, gym.spaces.Discrete):
        obs_dim, obs_kind, obs_start = int(obs_space.n), "discrete", int(obs_space.start)
    else:
        raise EnvError(
            f"{env_id!r} has observation space {obs_space}; asynca3c supports Box and Discrete"
        )
    return EnvSpec(
        env_id=env_id,
        obs_dim=obs_dim,
        obs_kind=obs_kind,
        obs_start=obs_start,
        **bounds,
        reward_threshold=getattr(spec, "reward_threshold", None),
        **_describe_actions(act_space, env_id),
    )


def _describe_actions(act_space, env_id: str) -> dict:
    if isinstance(act_space, gym.spaces.Discrete):
        if act_space.start != 0:
            raise EnvError(f"{env_id!r} has a Discrete action space starting at {act_space.start}; "
                           "asynca3c supports Discrete spaces starting at 0")
        return {"n_actions": int(act_space.n), "action_kind": "discrete"}
    if isinstance(act_space, gym.spaces.Box):
        if len(act_space.shape) != 1:
            raise EnvError(f"{env_id!r} has a Box action space of shape {act_space.shape}; asynca3c supports "
                           "one-dimensional Box action spaces")
        if not (np.all(np.isfinite(act_space.low)) and np.all(np.isfinite(act_space.high))):
            raise EnvError(f"{env_id!r} has a Box action space with infinite bounds ({act_space}); asynca3c "
                           "needs finite bounds to clip and explore in")
        return {"n_actions": int(act_space.shape[0]), "action_kind": "box",
                "action_low": tuple(float(x) for x in act_space.low),
                "action_high": tuple(float(x) for x in act_space.high)}
    raise EnvError(f"{env_id!r} has action space {act_space}; asynca3c supports Discrete and Box")


def make_vector_env(env_id: str, num_envs: int, env_kwargs: dict | None = None, *,
                    wrapper: str = "") -> gym.vector.VectorEnv:
    """A vector of ``num_envs`` environments that autoresets on the next step, with ``wrapper``'s observations."""
    kwargs = dict(env_kwargs or {})
    try:
        envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)
    except _MAKE_ERRORS as e:
        if not isinstance(e, gym.error.Error) or isinstance(e, gym.error.DependencyNotInstalled):
            raise _refusal(env_id, kwargs, e) from None
        envs = None  # no vector entry point (or an unknown id): the sync vector below says which
    if envs is None or envs.metadata.get("autoreset_mode") != AutoresetMode.NEXT_STEP:
        if envs is not None:
            envs.close()
        try:
            envs = gym.make_vec(
                env_id, num_envs=num_envs, vectorization_mode="sync",
                vector_kwargs={"autoreset_mode": AutoresetMode.NEXT_STEP}, **kwargs,
            )
        except _MAKE_ERRORS as e:
            raise _refusal(env_id, kwargs, e) from None
    return wrap_vector(envs, wrapper, env_id)


class ObsEncoder:
    """Turns a vector env's observations into float32 rows of width obs_dim."""

    def __init__(self, spec: EnvSpec):
        self.spec = spec
        self._eye = np.eye(spec.obs_dim, dtype=np.float32) if spec.obs_kind == "discrete" else None

    def __call__(self, obs) -> np.ndarray:
        if self._eye is not None:
            return self._eye[np.asarray(obs, dtype=np.int64) - self.spec.obs_start]
        obs = np.asarray(obs, dtype=np.float32)
        return obs.reshape(len(obs), self.spec.obs_dim)
