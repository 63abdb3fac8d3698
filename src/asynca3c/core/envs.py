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

from asynca3c.core import atari
from asynca3c.core.wrappers import wrap_env, wrap_vector
from asynca3c.errors import EnvError


@dataclass(frozen=True)
class EnvSpec:
    """What the network and the agents need to know about an environment."""

    env_id: str
    obs_dim: int
    n_actions: int  # width of the policy head: Discrete's n, or a Box's dimension
    obs_kind: str  # "box", "discrete" or "image" (uint8 frames, kept uint8 all the way to the network)
    reward_threshold: float | None
    obs_start: int = 0  # a Discrete observation space's first value
    obs_low: tuple[float, ...] = ()  # a Box observation space's bounds, flattened (may be infinite)
    obs_high: tuple[float, ...] = ()
    action_kind: str = "discrete"  # "discrete", or "box" (a Gaussian policy)
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    #: An image's shape as the network sees it, channels first (C, H, W); () for other observations
    obs_shape: tuple[int, ...] = ()
    channels_last: bool = False  # the env's images are (H, W, C): the encoder moves the channels first


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


def _make_single(env_id: str, env_kwargs: dict, *, wrapper: str = "", render_mode: str | None = None) -> gym.Env:
    """One env, with ``wrapper``'s observations; an Atari id with the standard preprocessing (evaluation's:
    a life loss is not the end of the episode)."""
    extra: dict[str, Any] = {"render_mode": render_mode} if render_mode else {}
    try:
        if atari.is_atari(env_id):  # the vector's own settings (threads, backend) mean nothing to one env
            single = {k: v for k, v in env_kwargs.items() if k not in atari.VECTOR_ONLY}
            env = atari.make_atari_env(env_id, training=False, **extra, **single)
        else:
            _check_atari_installed(env_id)
            env = gym.make(env_id, **extra, **env_kwargs)
    except _MAKE_ERRORS as e:
        raise _refusal(env_id, env_kwargs, e) from None
    return wrap_env(env, wrapper, env_id)


def make_env(env_id: str, env_kwargs: dict | None = None, *, wrapper: str = "",
             render_mode: str | None = None) -> gym.Env:
    """One environment as training sees it (videos, checks): ``wrapper``'s observations, and Atari's
    preprocessing for an Atari id."""
    return _make_single(env_id, dict(env_kwargs or {}), wrapper=wrapper, render_mode=render_mode)


def _check_atari_installed(env_id: str) -> None:
    """A clear refusal for an Atari id when ale-py is missing (gymnasium would call the id unknown)."""
    if (env_id.startswith("ALE/") or "NoFrameskip" in env_id) and not atari.ale_installed():
        raise EnvError(f"{env_id!r} needs ale-py, which is not installed: pip install 'asynca3c[atari]'")


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
    image = image_layout(obs_space)
    if image is not None:
        shape, channels_last = image
        obs_dim, obs_kind = int(np.prod(shape)), "image"
        bounds = {"obs_shape": shape, "channels_last": channels_last}
    elif isinstance(obs_space, gym.spaces.Box):
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


def image_layout(space) -> tuple[tuple[int, int, int], bool] | None:
    """An image observation space's (C, H, W) and whether the env gives it channels last; None for anything
    that is not an image. An image is a uint8 Box of 2 (H, W: one channel) or 3 dimensions; a 3-D one is
    channels last when its last axis is 1, 3 or 4 long (RGB(A), grayscale) and its first is not, else channels
    first (a stack of frames: (4, 84, 84))."""
    if not (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) in (2, 3)):
        return None
    if len(space.shape) == 2:
        h, w = space.shape
        return (1, int(h), int(w)), False
    a, b, c = (int(x) for x in space.shape)
    if c in (1, 3, 4) and a not in (1, 3, 4):
        return (c, a, b), True
    return (a, b, c), False


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
                    wrapper: str = "", training: bool = False) -> gym.vector.VectorEnv:
    """A vector of ``num_envs`` environments that autoresets on the next step, with ``wrapper``'s observations.
    Atari ids get the standard preprocessing (``core.atari``), with episodic life when ``training``
    (``info['game_over']`` then says where a whole game ended, for the returns reported)."""
    kwargs = dict(env_kwargs or {})
    if atari.is_atari(env_id):
        try:
            return wrap_vector(atari.make_atari_vector(env_id, num_envs, training=training, **kwargs), wrapper,
                               env_id)
        except TypeError as e:
            raise _refusal(env_id, kwargs, e) from None
    _check_atari_installed(env_id)
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
    """Turns a vector env's observations into what the network takes: float32 rows of width obs_dim, or
    uint8 images [rows, C, H, W] (never converted to floats on the way: the network scales them)."""

    def __init__(self, spec: EnvSpec):
        self.spec = spec
        self._eye = np.eye(spec.obs_dim, dtype=np.float32) if spec.obs_kind == "discrete" else None
        self.image = spec.obs_kind == "image"

    def __call__(self, obs) -> np.ndarray:
        if self._eye is not None:
            return self._eye[np.asarray(obs, dtype=np.int64) - self.spec.obs_start]
        if self.image:
            frames = np.asarray(obs)
            if frames.dtype != np.uint8:
                raise TypeError(f"image observations of dtype {frames.dtype} where uint8 was expected")
            c, h, w = self.spec.obs_shape
            if self.spec.channels_last:
                frames = frames.reshape(len(frames), h, w, c).transpose(0, 3, 1, 2)
            return np.ascontiguousarray(frames.reshape(len(frames), c, h, w))
        obs = np.asarray(obs, dtype=np.float32)
        return obs.reshape(len(obs), self.spec.obs_dim)
