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
    ``behaviour_prob`` that policy's probability of it (epsilon included), kept
    for lag measurement and later importance weighting.
    """

    obs: np.ndarray  # float32 [B, obs_dim]
    action: np.ndarray  # int64 [B]
    ret: np.ndarray  # float32 [B]
    discount: np.ndarray  # float32 [B]
    boot_obs: np.ndarray  # float32 [B, obs_dim]
    version: np.ndarray  # int64 [B]
    behaviour_prob: np.ndarray  # float32 [B]

    def __len__(self) -> int:
        return len(self.action)

    @classmethod
    def concat(cls, batches: list[SampleBatch]) -> SampleBatch:
        if len(batches) == 1:
            return batches[0]
        return cls(**{f.name: np.concatenate([getattr(b, f.name) for b in batches]) for f in fields(cls)})


@dataclass
class StepStats:
    """What one minimize step reports back to the loop."""

    version: int  # policy version after this update
    batch_size: int
    policy_loss: float
    value_loss: float
    entropy: float
    grad_norm: float
    lag_sum: float  # sum over samples of (version before update - version that acted)


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
