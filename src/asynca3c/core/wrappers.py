"""Named observation wrappers (``Config.env_wrapper``), applied by name wherever a run makes environments.

A name, not a callable, so that it travels in config files, checkpoints and
``config.json``, and ``asynca3c eval`` replays the policy on the same
observations it learned from. ``mask-velocity`` is issue 16's memory task:
CartPole without its two velocities, which a feed-forward policy cannot
recover from one observation and a recurrent one can from several.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import batch_space
from gymnasium.wrappers.vector import TransformObservation as TransformVectorObservation

from asynca3c.errors import ConfigError, EnvError

#: name -> (the observation shape it fits, the dimensions it keeps, whose shape that is). config.ENV_WRAPPERS
#: lists the same names (the config layer imports no gymnasium; a test keeps the two equal).
KEEP: dict[str, tuple[tuple[int, ...], tuple[int, ...], str]] = {
    "mask-velocity": ((4,), (0, 2), "CartPole's: cart position, cart velocity, pole angle, pole velocity"),
}


def check_name(name: str) -> None:
    """ConfigError naming ``name`` and the allowed ones, for callers that bypass Config."""
    if name and name not in KEEP:
        raise ConfigError(f"env_wrapper={name!r} is not allowed: '' (none) or {', '.join(KEEP)}")


def _kept(env, space: gym.Space, name: str, env_id: str) -> tuple[gym.spaces.Box, np.ndarray]:
    """The wrapped single observation space and the kept indices. Where the wrapper does not fit: EnvError,
    and ``env`` is closed (the caller made it only to wrap it)."""
    shape, keep, whose = KEEP.get(name, ((), (), ""))
    if name not in KEEP or not isinstance(space, gym.spaces.Box) or space.shape != shape:
        env.close()
        check_name(name)
        got = space.shape if isinstance(space, gym.spaces.Box) else space
        raise EnvError(f"env_wrapper {name!r} does not fit {env_id!r}: it needs a Box observation of shape "
                       f"{shape} ({whose}), and {env_id!r} observes {got}")
    idx = np.asarray(keep)
    return gym.spaces.Box(space.low[idx], space.high[idx], dtype=space.dtype), idx


def wrap_env(env: gym.Env, name: str, env_id: str) -> gym.Env:
    """One environment (evaluation, video, check-env) with ``name``'s observations ('' : unchanged)."""
    if not name:
        return env
    space, idx = _kept(env, env.observation_space, name, env_id)
    return gym.wrappers.TransformObservation(env, lambda obs: obs[idx], space)


def wrap_vector(envs: gym.vector.VectorEnv, name: str, env_id: str) -> gym.vector.VectorEnv:
    """A vector env (numpy-vectorized or SyncVectorEnv, any autoreset mode) with ``name``'s observations."""
    if not name:
        return envs
    single, idx = _kept(envs, envs.single_observation_space, name, env_id)
    func, space = (lambda obs: obs[:, idx]), batch_space(single, envs.num_envs)
    try:
        return TransformVectorObservation(envs, func, space, single)
    except TypeError:  # gymnasium 1.0: the wrapper takes no single space; set it afterwards
        wrapped = TransformVectorObservation(envs, func, space)
        wrapped.single_observation_space = single
        return wrapped
