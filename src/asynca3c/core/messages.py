"""What crosses a process boundary: sample batches in, step statistics back, metrics rows out.

Plain numpy and plain values only, so each pickles cheaply through the learner
pipe today and through shard and Ray channels later.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TypedDict

import numpy as np


@dataclass
class SampleBatch:
    """n-step samples; row i is one transition's training example.

    ``discount`` is gamma**k for a window of k steps, or 0 when the episode
    terminated inside the window; the target is ``ret + discount * V(boot_obs)``.
    ``version`` is the policy version that chose the action and
    ``behaviour_logp`` that policy's log-probability of it (epsilon included), kept
    for lag measurement and later importance weighting.
    """

    obs: np.ndarray  # float32 [B, obs_dim], or uint8 images [B, C, H, W]
    action: np.ndarray  # int64 [B]
    ret: np.ndarray  # float32 [B]
    discount: np.ndarray  # float32 [B]
    boot_obs: np.ndarray  # like obs
    version: np.ndarray  # int64 [B]
    behaviour_logp: np.ndarray  # float32 [B]

    def __len__(self) -> int:
        return len(self.action)

    @classmethod
    def concat(cls, batches: list[SampleBatch]) -> SampleBatch:
        if len(batches) == 1:
            return batches[0]
        return cls(**{f.name: np.concatenate([getattr(b, f.name) for b in batches]) for f in fields(cls)})


@dataclass
class Segment:
    """T steps of E environments, as an agent ships them to the learner (vtrace).

    Observations travel once: row t is what action t was chosen on, row T the
    bootstrap. In NEXT_STEP autoreset the step after an episode end is invalid
    (its action is ignored, its reward belongs to no episode); its row holds the
    final observation of the episode that ended, which a truncated step
    bootstraps from. ``reward`` is the training reward (scaled, plus any bonus).
    A recurrent policy's state is zeroed after every invalid step, so the row
    after one (an episode's first) starts from zeros when acting and learning.
    """

    obs: np.ndarray  # float32 [T+1, E, obs_dim], or uint8 images [T+1, E, C, H, W]
    action: np.ndarray  # int64 [T, E] or float32 [T, E, dim]
    reward: np.ndarray  # float32 [T, E]
    terminated: np.ndarray  # bool [T, E]
    truncated: np.ndarray  # bool [T, E]
    valid: np.ndarray  # bool [T, E]: False on autoreset steps
    behaviour_logp: np.ndarray  # float32 [T, E]: log mu(a|s), epsilon included
    version: np.ndarray  # int64 [T, E]: the policy version that chose each action
    #: float32 [1, E, S]: a recurrent policy's state entering row 0 (S = 0 for a feed-forward one); the
    #: leading axis keeps environments on axis 1, like every other field
    state0: np.ndarray

    @classmethod
    def empty(cls, T: int, E: int, obs_shape: int | tuple[int, ...], action_shape: tuple, action_dtype,
              state_size: int = 0, obs_dtype=np.float32) -> Segment:
        """Zeroed buffers for an agent to fill step by step (every step invalid until written); ``obs_shape``:
        one observation's (an int for a row's width)."""
        shape = (obs_shape,) if isinstance(obs_shape, int) else tuple(obs_shape)
        return cls(obs=np.zeros((T + 1, E, *shape), obs_dtype), action=np.zeros((T, E, *action_shape), action_dtype),
                   reward=np.zeros((T, E), np.float32), terminated=np.zeros((T, E), bool),
                   truncated=np.zeros((T, E), bool), valid=np.zeros((T, E), bool),
                   behaviour_logp=np.zeros((T, E), np.float32), version=np.zeros((T, E), np.int64),
                   state0=np.zeros((1, E, state_size), np.float32))

    @property
    def envs(self) -> int:
        return self.reward.shape[1]

    def __len__(self) -> int:
        """Steps held (T x E)."""
        return self.reward.size

    def columns(self, start: int, stop: int) -> Segment:
        """The environments ``start:stop`` of every step."""
        return Segment(**{f.name: getattr(self, f.name)[:, start:stop] for f in fields(Segment)})

    @classmethod
    def concat(cls, parts: list[Segment]) -> Segment:
        """Side by side (more environments), for segments of the same length."""
        if len(parts) == 1:
            return parts[0]
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts], axis=1) for f in fields(cls)})


@dataclass
class StepStats:
    """What one learner call (one minimize step, or K epochs of minibatches) reports back to the loop."""

    version: int  # policy version after this call
    batch_size: int  # samples in the batch
    policy_loss: float
    value_loss: float
    entropy: float
    grad_norm: float
    lag_sum: float  # sum over samples of (version before the update - version that acted)
    steps: int = 1  # gradient steps taken (each one a policy version)
    nonfinite: int = 0  # steps skipped for a non-finite loss or gradient
    lag_max: float = float("nan")  # largest lag of a sample in the batch
    rho_mean: float = float("nan")  # mean pi/mu over the batch's valid steps
    rho_clipped: float = float("nan")  # fraction of those with pi/mu > rho_bar
    kl: float = float("nan")  # approximate KL(mu || pi): mean of (rho - 1) - log rho


class ProgressRow(TypedDict):
    """The run's counters and figures: the first part of a ``MetricsRow`` (``Progress.row()``)."""

    seconds: float
    env_steps: int
    steps_per_second: float
    episodes: int
    updates: int
    eval_episodes: int
    eval_return_mean: float
    train_return_mean: float
    episode_length_mean: float
    policy_lag_mean: float
    policy_loss: float
    value_loss: float
    entropy: float
    grad_norm: float
    policy_lag_max: float
    rho_mean: float
    rho_clipped_fraction: float
    kl_behaviour: float
    nonfinite_steps: int
    env_faults: int
    learner_restarts: int
    shard_restarts: int
    solved: bool


class MetricsRow(ProgressRow):
    """One progress report: a ``progress.csv`` row, a TensorBoard point, an item of ``Trainer.metrics()``.

    The keys are a contract: the CSV header, the TensorBoard tags, the CLI's
    progress line and services that serve the row all read them. The
    ``ProgressRow`` keys come first, then these.
    """

    queue_depth: int
    loop_lag_p99_ms: float
    loop_lag_max_ms: float
