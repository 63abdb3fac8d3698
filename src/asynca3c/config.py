"""Hyperparameters: one frozen, validated dataclass and the named presets.

Each field's ``help`` metadata is the text ``asynca3c train --help`` shows, so
the documentation of a setting lives next to its default.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from asynca3c.checks import check_gamma_n
from asynca3c.errors import ConfigError


def _f(default, help: str, **kw):
    if callable(default) and not isinstance(default, (int, float, str, bool)):
        return field(default_factory=default, metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class Config:
    """Everything a training run needs; defaults are tuned for CartPole-v1 on a 2-core CPU.

    Where the defaults leave the seed's constants (``preset("seed")`` has them):
    two agents of 256 environments each instead of eight of one (an env step
    costs about the same for 1 as for 256 numpy-vectorized environments), a
    short, low epsilon (the seed's 0.4 to 0.15 over 75k steps is gone in a
    fifth of a second here and its off-policy actions made the policy unstable
    near the threshold), rewards scaled by 0.1 with lr 0.003 and gradient-norm
    clipping at 0.5 (unscaled, CartPole's values reach 100 and the value loss's
    gradient, clipped, crowds out the policy's in the shared hidden layer: lr
    0.002 unscaled took a median 17.5 s to solve, 4/5 seeds confirmed; scaled,
    4.4 s, 10/10; lr 0.005 unclipped collapsed the policy in 2 of 5 seeds), and an
    evaluation agent of 32 environments rather than 100 (100 lockstep episodes
    fill the 100-episode window in one synchronized generation, which judged
    the policy less reliably: 7/10 seeds confirmed against 9/10).
    """

    # --- environment
    env: str = _f("CartPole-v1", "gymnasium environment id")
    env_kwargs: dict = _f(dict, "keyword arguments for gym.make, as JSON (e.g. '{\"max_episode_steps\": 200}')")
    seed: int = _f(0, "random seed for torch, numpy and the environments")
    # --- agents
    agents: int = _f(2, "agent coroutines that explore (each steps its own vector of environments)")
    envs_per_agent: int = _f(256, "environments in each exploring agent's vector")
    eval_envs: int = _f(32, "environments of the evaluation agent, which acts without epsilon; its "
                             "episodes decide 'solved' (0: no evaluation agent)")
    eval_agent_trains: bool = _f(True, "the evaluation agent's transitions are used for training too")
    epsilon_start: tuple = _f((0.1,), "epsilon at the start, one value or one per agent (comma-separated)")
    epsilon_end: tuple = _f((0.0,), "epsilon after epsilon_steps, one value or one per agent")
    epsilon_steps: int = _f(500_000, "environment steps (all agents together) over which epsilon decays linearly")
    # --- returns
    n_step: int = _f(8, "n of the n-step return")
    gamma: float = _f(0.99, "discount factor")
    reward_scale: float = _f(0.1, "rewards are multiplied by this before returns are computed (reported "
                                  "returns stay unscaled); keeps value targets small so the value loss does "
                                  "not crowd out the policy's gradient")
    novelty_bonus: float = _f(0.0, "beta of a count-based exploration bonus: beta/sqrt(visits) is added to the "
                                   "(scaled) reward on arriving in a cell of a grid over the observation box; "
                                   "for sparse rewards such as MountainCar's; needs finite bounds (0: off)")
    novelty_bins: int = _f(16, "cells per observation dimension of the novelty bonus's grid")
    # --- optimization
    optimizers: int = _f(2, "optimizer tasks feeding minimize steps to the learner's executor")
    learner: str = _f("process", "where minimize steps run: 'process' (one worker process with its own "
                                 "GIL) or 'thread' (executor threads in this process)")
    min_batch: int = _f(32, "smallest batch (samples) an optimizer trains on")
    max_batch: int = _f(4096, "largest batch (samples) one minimize step takes")
    queue_size: int = _f(64, "bound of the sample queue, in agent batches; agents wait when it is full")
    lr: float = _f(0.003, "RMSprop learning rate")
    rmsprop_alpha: float = _f(0.99, "RMSprop smoothing constant (decay)")
    rmsprop_eps: float = _f(1e-5, "RMSprop epsilon")
    value_coef: float = _f(0.5, "c_v: weight of the value loss")
    entropy_coef: float = _f(0.01, "c_e: weight of the entropy term (+ c_e * sum p log p)")
    max_grad_norm: float = _f(0.5, "clip the gradient norm to this value (0: no clipping)")
    hidden: tuple = _f((16,), "sizes of the shared hidden layers (comma-separated)")
    normalize_obs: bool = _f(False, "map observation dimensions with finite Box bounds onto [-1, 1] inside "
                                    "the network")
    # --- machinery
    device: str = _f("auto", "where minimize steps run: auto, cpu or cuda")
    torch_threads: int = _f(1, "torch intra-op threads (0: leave torch's setting alone)")
    # --- budget and stopping
    seconds: float = _f(30.0, "wall-clock budget in seconds (0: no limit)")
    steps: int = _f(0, "environment-step budget (0: no limit)")
    until_solved: bool = _f(False, "stop as soon as the environment counts as solved")
    solve_window: int = _f(100, "episodes of the evaluation agent averaged for 'solved'")
    reward_threshold: float = _f(float("nan"), "return that counts as solved (NaN: the env spec's reward_threshold)")
    final_eval_episodes: int = _f(100, "fresh episodes without epsilon that confirm the result at the end")
    log_interval: float = _f(1.0, "seconds between progress reports")
    save_every: float = _f(60.0, "seconds between checkpoints in the run directory (0: only the final one)")
    tensorboard: bool = _f(False, "also write TensorBoard event files to RUN_DIR/tensorboard")

    def __post_init__(self):
        def set_(name, value):
            object.__setattr__(self, name, value)

        for name in ("epsilon_start", "epsilon_end", "hidden"):
            value = getattr(self, name)
            set_(name, tuple(value) if isinstance(value, (list, tuple)) else (value,))
        set_("env_kwargs", dict(self.env_kwargs))
        self._validate()

    def _validate(self):
        def need(ok, name, allowed):
            if not ok:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not allowed: {allowed}")

        need(isinstance(self.env, str) and self.env, "env", "a gymnasium environment id")
        for name in ("agents", "envs_per_agent", "optimizers", "min_batch", "max_batch", "queue_size",
                     "solve_window", "n_step", "novelty_bins"):
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool) and v >= 1, name, "an integer >= 1")
        for name in ("eval_envs", "epsilon_steps", "steps", "torch_threads", "final_eval_episodes"):
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool) and v >= 0, name, "an integer >= 0")
        need(self.max_batch >= self.min_batch, "max_batch", f"an integer >= min_batch ({self.min_batch})")
        try:
            check_gamma_n(self.gamma, self.n_step)
        except (TypeError, ValueError) as e:
            raise ConfigError(str(e)) from None
        for name in ("lr", "rmsprop_eps", "log_interval", "reward_scale"):
            need(_num(getattr(self, name)) and getattr(self, name) > 0, name, "a number > 0")
        need(_num(self.rmsprop_alpha) and 0 <= self.rmsprop_alpha < 1, "rmsprop_alpha", "a number in [0, 1)")
        for name in ("value_coef", "entropy_coef", "max_grad_norm", "seconds", "save_every", "novelty_bonus"):
            need(_num(getattr(self, name)) and getattr(self, name) >= 0, name, "a number >= 0")
        for name in ("epsilon_start", "epsilon_end"):
            v = getattr(self, name)
            need(all(_num(x) and 0 <= x <= 1 for x in v), name, "numbers in [0, 1]")
            need(len(v) in (1, self.agents), name, f"one value or one per agent ({self.agents})")
        need(all(isinstance(h, int) and h >= 1 for h in self.hidden) and self.hidden, "hidden",
             "one or more integers >= 1")
        need(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "device",
             "auto, cpu, cuda or cuda:N")
        need(self.learner in ("process", "thread"), "learner", "process or thread")
        need(self.seed is not None and isinstance(self.seed, int), "seed", "an integer")
        need(_num(self.reward_threshold), "reward_threshold", "a number (NaN: the env spec's threshold)")
        need(not self.until_solved or self.eval_envs > 0, "until_solved",
             "only with an evaluation agent (eval_envs >= 1)")

    def epsilon(self, agent: int) -> tuple[float, float]:
        """(start, end) of the epsilon schedule of exploring agent ``agent``."""
        pick = lambda v: v[agent] if len(v) > 1 else v[0]  # noqa: E731
        return pick(self.epsilon_start), pick(self.epsilon_end)

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=True)


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


#: The seed article's constants (its table), with our machinery.
SEED_PRESET = dict(
    agents=8, envs_per_agent=1, optimizers=2, n_step=8, gamma=0.99, epsilon_start=(0.4,),
    epsilon_end=(0.15,), epsilon_steps=75_000, min_batch=32, lr=0.005, value_coef=0.5,
    entropy_coef=0.01, hidden=(16,), max_grad_norm=0.0, reward_scale=1.0,
)

PRESETS: dict[str, dict[str, Any]] = {"default": {}, "seed": SEED_PRESET}


def preset(name: str, **overrides) -> Config:
    """Config of a named preset with some fields changed."""
    if name not in PRESETS:
        raise ConfigError(f"preset={name!r} is not allowed: one of {', '.join(PRESETS)}")
    return Config(**{**PRESETS[name], **overrides})
