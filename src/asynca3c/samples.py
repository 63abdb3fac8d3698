"""Sample batches: what agents send to optimizers (plain numpy, so they can cross processes)."""

from __future__ import annotations

from dataclasses import dataclass, fields

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
