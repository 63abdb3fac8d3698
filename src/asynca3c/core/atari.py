"""Atari environments with the standard preprocessing, as NEXT_STEP vector envs and as single envs.

The dynamics are rl-zoo's NoFrameskip-v4 ones: ALE v5 with ``frameskip=1`` and
``repeat_action_probability=0`` underneath, then 4-frame skip with a max-pool of
the last two frames, 84x84 grayscale, a 4-frame stack (uint8, channel-first,
zero-padded at an episode's start as SB3's VecFrameStack and ale-py's C++
vector do), up to 30 no-op frames at reset and one FIRE frame for games whose
action set has FIRE. Rewards are the game's raw, unclipped scores: the trainer
clips what it learns from itself, and reports what the env returns.

Two backends make the same vector: ``"ale"`` is ale-py's C++ ``AtariVectorEnv``,
``"gymnasium"`` a ``SyncVectorEnv`` of gymnasium's ``AtariPreprocessing`` +
``FrameStackObservation``. With ``noop_max=0`` they are bit-identical (frames,
rewards, flags, lives; the tests check it): the C++ resize is OpenCV's
INTER_AREA like gymnasium's. With no-ops they differ only in how many no-op
frames start a game (C++ draws 0-29 with its own RNG, gymnasium 1-30 from
``np_random``): first observations after ``reset(seed=0)``, 16 envs, Pong: max
abs pixel difference 162, mean 0.58 (1 env of 16 differs); Breakout: 110, 0.013.

Episodic life (``training=True``) is done here, not by ale-py: its
``episodic_life=True`` autoresets the *whole game* after a life loss (Breakout
lives read 5, 4, 5, 4, ...), and with ``life_loss_info=True`` the step after
the flagged loss is an ordinary step (action played, reward counted), not a
reset step. Here a life loss is ``terminated=True``; the next step is a reset
step that plays FIRE (NOOP where the game has no FIRE) instead of the agent's
action, returns reward 0 and a fresh stack ([0, 0, 0, frame]), and the game
goes on (lives 4, 3, 2, 1; score and frame counters carry on). Such steps never
scored in 8 games x 8 envs x 3000 random steps, so full-game returns lose
nothing. ``info["game_over"]`` (bool per env) is True exactly where the whole
game ended (lives gone, or the 108000-frame truncation; should that fall in a
post-life-loss reset step, the reset step carries it). ``training=False``: a
life loss is not terminal and ``game_over == term | trunc``.

Pong, 16 envs, random actions, on 2 cores: ale 3,300-4,200 steps/s (2 threads),
gymnasium 1,500-1,700 steps/s.

Needs ``ale-py`` (ROMs included) and, for the gymnasium wrappers
(``make_atari_env`` and the ``"gymnasium"`` backend), ``opencv-python(-headless)``.
"""

from __future__ import annotations

import os
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorWrapper

from asynca3c.errors import EnvError

FRAME_SKIP = 4
SCREEN_SIZE = 84
STACK = 4
NOOP_MAX = 30
MAX_EPISODE_FRAMES = 108_000  # 30 minutes of play at 60 frames/s, as ALE v5 and rl-zoo
BACKENDS = ("auto", "ale", "gymnasium")
#: make_atari_vector's keyword arguments that make_atari_env does not take
VECTOR_ONLY = ("backend", "num_threads")
_ENTRY_POINT = "ale_py.env:AtariEnv"


def _ale_py() -> Any:
    """ale_py with its ids registered, or None when it is not installed."""
    try:
        import ale_py
    except ImportError:
        return None
    gym.register_envs(ale_py)
    return ale_py


def ale_installed() -> bool:
    """Whether ale-py can be imported (``pip install 'asynca3c[atari]'``)."""
    return _ale_py() is not None


def _env_spec(env_id: str) -> gym.envs.registration.EnvSpec | None:
    """The registered spec of an Atari id with image observations, else None."""
    if _ale_py() is None:
        return None
    try:
        spec = gym.spec(env_id)
    except gym.error.Error:
        return None
    if spec.entry_point != _ENTRY_POINT or spec.kwargs.get("obs_type", "rgb") == "ram":
        return None
    return spec


def is_atari(env_id: str) -> bool:
    """True for an ale-py id with image observations ("ALE/Pong-v5", "PongNoFrameskip-v4", ...)."""
    return _env_spec(env_id) is not None


def atari_game(env_id: str) -> str:
    """The ROM name behind an Atari id ("ALE/MsPacman-v5" -> "ms_pacman"); EnvError for other ids."""
    spec = _env_spec(env_id)
    if spec is None:
        why = "ale-py is not installed" if _ale_py() is None else "not an ale-py id with image observations"
        raise EnvError(f"{env_id!r} is not an Atari environment ({why})")
    return str(spec.kwargs["game"])


def atari_spaces(env_id: str) -> tuple[gym.spaces.Box, gym.spaces.Discrete]:
    """The single observation space Box(0, 255, (4, 84, 84), uint8) and the Discrete (minimal) action
    space, read from the ROM without stepping."""
    meanings = action_meanings(env_id)
    obs = gym.spaces.Box(0, 255, (STACK, SCREEN_SIZE, SCREEN_SIZE), np.uint8)
    return obs, gym.spaces.Discrete(len(meanings))


def action_meanings(env_id: str) -> list[str]:
    """The names of the minimal action set ("NOOP", "FIRE", ...), in action order."""
    env = _raw_env(env_id)
    try:
        return list(env.unwrapped.get_action_meanings())  # type: ignore[attr-defined]
    finally:
        env.close()


def _reset_action(meanings: list[str], fire_reset: bool) -> int:
    """What a reset step after a life loss plays: FIRE where the game has it (and fire_reset), else NOOP."""
    return meanings.index("FIRE") if fire_reset and "FIRE" in meanings else 0


def _raw_env(env_id: str, *, render_mode: str | None = None,
             max_episode_frames: int = MAX_EPISODE_FRAMES) -> gym.Env:
    atari_game(env_id)  # EnvError for what is not Atari
    return gym.make(env_id, frameskip=1, repeat_action_probability=0.0,
                    max_num_frames_per_episode=max_episode_frames, render_mode=render_mode)


def lost_a_life(lives: Any, before: Any, game_over: Any) -> np.ndarray:
    """Where a step lost a life that ends a training episode (arrays or scalars): lives fell while the game
    goes on, and only while lives remain, as SB3's EpisodicLifeEnv (some games show 0 lives a few frames
    before their game over)."""
    lives = np.asarray(lives)
    return (lives < np.asarray(before)) & (lives > 0) & ~np.asarray(game_over, bool)


class _FireReset(gym.Wrapper):
    """After the game's reset, one frame of FIRE (as ale-py's C++ ``use_fire_reset``), under the no-ops."""

    def __init__(self, env: gym.Env, fire: int):
        super().__init__(env)
        self.fire = fire

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        obs, _, term, trunc, step_info = self.env.step(self.fire)
        info.update(step_info)
        if term or trunc:  # no game ends in one frame; if one did, start it again without the press
            obs, info = self.env.reset(options=options)
        return obs, info


class _LifeEpisodes(gym.Wrapper):
    """Single-env episodic life (``episodic``) and ``info["game_over"]``. After a life loss (terminated)
    a ``reset()`` without seed or options continues the game with one step of ``reset_action``; with a
    seed or options, or after the game ended, it resets the game. Not ``episodic``: as ``AtariLives``, the
    step after a life loss plays a ``reset_action`` other than NOOP (FIRE) in place of the agent's."""

    def __init__(self, env: gym.Env, *, episodic: bool, reset_action: int):
        super().__init__(env)
        self.episodic, self.reset_action = episodic, reset_action
        self._lives = 0
        self._continue = False  # the last step lost a life and the game goes on
        self._serve = False  # not episodic: the next step plays reset_action (FIRE) after a life loss

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        if self._continue and seed is None and options is None:
            self._continue = False
            obs, _, term, trunc, info = self.env.step(self.reset_action)
            if not (term or trunc):
                self._lives = int(info["lives"])
                info["game_over"] = False
                return obs, info
            # the game ended (its frame limit) inside the restart step: start a new one
        self._continue = self._serve = False
        obs, info = self.env.reset(seed=seed, options=options)
        self._lives = int(info["lives"])
        info["game_over"] = False
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._serve:
            action, self._serve = self.reset_action, False
        obs, reward, term, trunc, info = self.env.step(action)
        lives = int(info["lives"])
        game_over = bool(term or trunc)
        if lost_a_life(lives, self._lives, game_over):
            if self.episodic:
                term, self._continue = True, True
            else:
                self._serve = bool(self.reset_action)
        self._lives = lives
        info["game_over"] = game_over
        return obs, reward, term, trunc, info


def _preprocessed(env: gym.Env, *, noop_max: int, fire_reset: bool) -> gym.Env:
    """FIRE at reset (where the game has it), then gymnasium's AtariPreprocessing, no life-loss terminals."""
    meanings = list(env.unwrapped.get_action_meanings())  # type: ignore[attr-defined]
    if fire_reset and "FIRE" in meanings:
        env = _FireReset(env, meanings.index("FIRE"))
    return gym.wrappers.AtariPreprocessing(env, noop_max=noop_max, frame_skip=FRAME_SKIP, screen_size=SCREEN_SIZE,
                                           terminal_on_life_loss=False, grayscale_obs=True, scale_obs=False)


def make_atari_env(env_id: str, *, training: bool = False, render_mode: str | None = None,
                   noop_max: int = NOOP_MAX, fire_reset: bool = True,
                   max_episode_frames: int = MAX_EPISODE_FRAMES) -> gym.Env:
    """One preprocessed Atari env (gymnasium wrappers) for evaluation and videos: uint8 observations of
    shape (4, 84, 84), raw rewards, ``info["game_over"]`` on every step; ``training``: a life loss is
    terminal and the following ``reset()`` continues the game (see the module docstring)."""
    env = _raw_env(env_id, render_mode=render_mode, max_episode_frames=max_episode_frames)
    meanings = list(env.unwrapped.get_action_meanings())  # type: ignore[attr-defined]
    env = _preprocessed(env, noop_max=noop_max, fire_reset=fire_reset)
    env = _LifeEpisodes(env, episodic=training, reset_action=_reset_action(meanings, fire_reset))
    return gym.wrappers.FrameStackObservation(env, STACK, padding_type="zero")


class AtariLives(VectorWrapper):
    """Episodic life over a NEXT_STEP Atari vector that reports ``info["lives"]`` and never ends an episode
    on a life loss itself, and ``info["game_over"]`` on every step; rewards as float64 (raw).

    ``episodic``: a life loss (lives fall, the game not over) is ``terminated=True``; the next step is a
    reset step that plays ``reset_action`` instead of the agent's, reports reward 0 and zeroes the stacked
    frames from before it, so its observation is a fresh start ([0, 0, 0, frame]) while the game goes on.
    Not ``episodic`` (evaluation): a life loss ends nothing, but a ``reset_action`` other than NOOP (FIRE) is
    still played on the next step, so a policy trained never to serve is evaluated the same way."""

    def __init__(self, env: gym.vector.VectorEnv, *, episodic: bool, reset_action: int):
        super().__init__(env)
        n = env.num_envs
        self.episodic, self.reset_action = episodic, reset_action
        self._lives = np.zeros(n, np.int64)
        self._restart = np.zeros(n, bool)  # the next step is a reset step after a life loss
        self._frames = np.full(n, STACK, np.int64)  # frames stacked since the episode began, at most STACK
        self._ended = np.zeros(n, bool)  # the last step ended the game: the next is the backend's own reset

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if seed is not None:  # ALE seeds each env with seed + i as a C int: fold any seed into that range
            seed = int(seed) % (2**31 - self.num_envs)
        obs, info = self.env.reset(seed=seed, options=options)
        mask = np.ones(self.num_envs, bool) if not options or "reset_mask" not in options else \
            np.asarray(options["reset_mask"], bool)
        self._lives[mask] = np.asarray(info["lives"], np.int64)[mask]
        self._restart[mask], self._frames[mask], self._ended[mask] = False, STACK, False
        info["game_over"] = np.zeros(self.num_envs, bool)
        return obs, info

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        restart = self._restart
        actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)  # what ale-py's vector accepts
        if restart.any():
            actions = actions.copy()
            actions[restart] = self.reset_action
        obs, reward, term, trunc, info = self.env.step(actions)
        reward = np.array(reward, dtype=np.float64)
        term, trunc = np.array(term, dtype=bool), np.array(trunc, dtype=bool)
        game_over = term | trunc
        lives = np.asarray(info["lives"], np.int64)
        lost = lost_a_life(lives, self._lives, game_over) & ~restart & ~self._ended
        if not self.episodic:  # the game goes on; FIRE serves the next ball, as in training
            self._restart = lost if self.reset_action else np.zeros_like(lost)
        else:
            reward[restart] = 0.0
            term |= lost
            self._frames = np.where(restart, 1, np.minimum(self._frames + 1, STACK))
            self._frames[self._ended] = STACK  # the backend's own reset zero-padded its stack
            if (self._frames < STACK).any():
                if not obs.flags.writeable:
                    obs = obs.copy()
                old = np.arange(STACK)[None, :] < (STACK - self._frames)[:, None]  # [env, stacked frame]
                obs[old] = 0
            self._restart = lost
        self._lives, self._ended = lives, game_over
        info["game_over"] = game_over
        return obs, reward, term, trunc, info

    def close(self, **kwargs: Any) -> None:
        super().close(**kwargs)
        base, vector_class = self.env.unwrapped, _ale_vector_class()
        if vector_class is not None and isinstance(base, vector_class):
            base.ale = None  # ale-py's C++ vector joins its threads when freed; its close alone keeps them


def _threads(num_envs: int, num_threads: int | None) -> int:
    if num_threads is not None:
        return int(num_threads)  # checked by make_atari_vector
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(num_envs, cpus))


def _ale_vector_class() -> Any:
    if _ale_py() is None:
        return None
    try:
        from ale_py.vector_env import AtariVectorEnv
    except ImportError:
        return None
    return AtariVectorEnv


def make_atari_vector(env_id: str, num_envs: int, *, training: bool, backend: str = "auto",
                      noop_max: int = NOOP_MAX, fire_reset: bool = True,
                      max_episode_frames: int = MAX_EPISODE_FRAMES,
                      num_threads: int | None = None) -> gym.vector.VectorEnv:
    """``num_envs`` preprocessed Atari envs in NEXT_STEP autoreset mode: uint8 observations of shape
    (num_envs, 4, 84, 84), raw float64 rewards, ``info["game_over"]``; ``training``: episodic life.

    ``backend``: "ale" (ale-py's C++ AtariVectorEnv, ``num_threads`` threads, default
    min(num_envs, CPUs)), "gymnasium" (SyncVectorEnv of gymnasium's wrappers) or "auto" (ale when
    ale-py has its vector env)."""
    game = atari_game(env_id)
    if backend not in BACKENDS:
        raise EnvError(f"backend={backend!r} is not allowed: one of {', '.join(BACKENDS)}")
    if num_envs < 1:
        raise EnvError(f"num_envs={num_envs} is not allowed: at least 1")
    if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer))
                                    or num_threads < 1):
        raise EnvError(f"num_threads={num_threads!r} is not allowed: a whole number of at least 1")
    vector_class = _ale_vector_class()
    if backend == "ale" and vector_class is None:
        raise EnvError("backend='ale' needs ale-py's AtariVectorEnv (ale-py >= 0.11); use backend='gymnasium'")
    envs: gym.vector.VectorEnv
    if backend != "gymnasium" and vector_class is not None:
        envs = vector_class(
            game, num_envs, num_threads=_threads(num_envs, num_threads), frameskip=FRAME_SKIP, grayscale=True,
            stack_num=STACK, img_height=SCREEN_SIZE, img_width=SCREEN_SIZE, maxpool=True, noop_max=noop_max,
            episodic_life=False, life_loss_info=False, reward_clipping=False, use_fire_reset=fire_reset,
            repeat_action_probability=0.0, full_action_space=False, autoreset_mode=AutoresetMode.NEXT_STEP,
            max_num_frames_per_episode=max_episode_frames)
        meanings = [action.name for action in envs.ale.get_action_set()]  # type: ignore[attr-defined]
    else:
        def make() -> gym.Env:
            env = _preprocessed(_raw_env(env_id, max_episode_frames=max_episode_frames), noop_max=noop_max,
                                fire_reset=fire_reset)
            return gym.wrappers.FrameStackObservation(env, STACK, padding_type="zero")

        envs = gym.vector.SyncVectorEnv([make] * num_envs, autoreset_mode=AutoresetMode.NEXT_STEP)
        meanings = list(envs.envs[0].unwrapped.get_action_meanings())  # type: ignore[attr-defined]
    return AtariLives(envs, episodic=training, reset_action=_reset_action(meanings, fire_reset))


__all__ = ["BACKENDS", "AtariLives", "action_meanings", "atari_game", "atari_spaces", "is_atari", "make_atari_env",
           "make_atari_vector"]
