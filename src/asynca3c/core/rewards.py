"""What the return kernel is fed: the environment's reward, scaled, plus an
optional count-based novelty bonus.

Sparse-reward tasks such as MountainCar-v0 never pay epsilon or entropy
exploration: a random walk does not reach the flag within 200 steps, so every
return is the same and there is nothing to learn from. A bonus of
``beta / sqrt(visits)`` for arriving in a cell of a grid laid over the
observation box (count-based exploration; cells hashed into a fixed table when
the grid is large) makes unseen states worth visiting until the real reward
takes over. Reported returns are always the environment's own.
"""

from __future__ import annotations

import math

import numpy as np

from asynca3c.config import ConfigError
from asynca3c.core.envs import EnvSpec

#: The count table never grows past this many cells; larger grids are hashed into it.
MAX_CELLS = 1 << 20


class NoveltyBonus:
    """Visit counts over a grid of ``bins`` cells per observation dimension, shared by all agents."""

    def __init__(self, low, high, bins: int, beta: float, seed: int = 0):
        low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        self.low, self.bins, self.beta = low, bins, beta
        self.inv_width = bins / (high - low)
        dims = len(low)
        if bins ** dims <= MAX_CELLS:  # the whole grid fits: one cell per slot, no collisions
            self.size = bins ** dims
            self.mult = bins ** np.arange(dims, dtype=np.int64)
        else:
            self.size = MAX_CELLS
            self.mult = np.random.default_rng(seed).integers(1, 1 << 40, dims, dtype=np.int64) | 1
        self.counts = np.zeros(self.size, dtype=np.int64)

    @classmethod
    def for_spec(cls, spec: EnvSpec, bins: int, beta: float, seed: int = 0) -> NoveltyBonus:
        """The grid over an environment's encoded observations; ConfigError for unbounded dimensions."""
        if spec.obs_kind == "image":
            raise ConfigError(f"novelty_bonus lays a grid over the observation box; {spec.env_id}'s observations "
                              f"are images of shape {spec.obs_shape} (use novelty_bonus=0)")
        if spec.obs_kind == "discrete":  # one-hot rows: each state is its own cell
            return cls(np.zeros(spec.obs_dim), np.ones(spec.obs_dim), 2, beta, seed)
        low, high = np.asarray(spec.obs_low, np.float64), np.asarray(spec.obs_high, np.float64)
        unbounded = [i for i in range(len(low)) if not (math.isfinite(low[i]) and math.isfinite(high[i]))]
        if unbounded:
            raise ConfigError(
                f"novelty_bonus needs finite observation bounds to lay its grid over; {spec.env_id}'s "
                f"observation dimension(s) {', '.join(map(str, unbounded))} are unbounded (use novelty_bonus=0)")
        return cls(low, high, bins, beta, seed)

    def cells(self, obs: np.ndarray) -> np.ndarray:
        """The table slot of each row of ``obs``."""
        idx = np.floor((np.asarray(obs, np.float64) - self.low) * self.inv_width)
        idx = np.clip(idx, 0, self.bins - 1).astype(np.int64)
        return (idx @ self.mult) % self.size

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Count a visit to each row's cell; each row's bonus ``beta / sqrt(visits)``."""
        cells = self.cells(obs)
        np.add.at(self.counts, cells, 1)
        return self.beta / np.sqrt(self.counts[cells])

    def state(self) -> np.ndarray:
        return self.counts.copy()

    def restore(self, counts) -> None:
        counts = np.asarray(counts, dtype=np.int64)
        if counts.shape != self.counts.shape:
            raise ConfigError(f"novelty counts of shape {counts.shape} do not fit a table of {self.size} "
                               f"cells (novelty_bins changed?)")
        self.counts[:] = counts


class TrainingReward:
    """``reward`` clipped to [-clip, clip] (0: not clipped), times ``scale``, plus the novelty bonus of the
    observation it led to."""

    def __init__(self, scale: float = 1.0, bonus: NoveltyBonus | None = None, clip: float = 0.0):
        self.scale, self.bonus, self.clip = scale, bonus, clip

    def __call__(self, reward: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
        """``reward``: one per row of ``next_obs`` (the encoded observations after the step)."""
        if self.clip:
            reward = np.clip(reward, -self.clip, self.clip)
        if self.scale != 1.0:
            reward = reward * self.scale
        if self.bonus is not None:
            reward = reward + self.bonus(next_obs)
        return reward
