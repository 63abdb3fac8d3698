"""How actions are drawn from the policy's parameters, per kind of action space (numpy side).

The predictor hands agents one row of policy parameters per observation:
action probabilities for a Discrete space, ``[mean | std]`` of a diagonal
Gaussian for a Box space. These classes sample from those rows (mixed with
epsilon-uniform exploration), pick the most likely action, keep actions in
ring buffers, and turn them into what the environment accepts.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import numpy.typing as npt

_A = TypeVar("_A")


def sample_actions(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One action per row of ``probs``, drawn by inverse CDF (vectorized)."""
    cdf = probs.cumsum(axis=1)
    u = rng.random((len(probs), 1), dtype=np.float32) * cdf[:, -1:]
    return np.minimum((cdf < u).sum(axis=1), probs.shape[1] - 1)


class DiscreteActions:
    """Actions 0..n-1; parameters are the softmax probabilities."""

    continuous = False
    dtype = np.int64

    def __init__(self, n: int):
        self.n = n
        self.shape: tuple[int, ...] = ()

    def choose(self, probs: np.ndarray, epsilon, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Sampled actions, each replaced by a uniform one with probability ``epsilon`` (a number or one
        per row), and each action's log-probability under that mixture (the behaviour policy mu; float32)."""
        n, k = probs.shape
        actions = sample_actions(probs, rng)
        explore = rng.random(n) < epsilon
        if explore.any():
            actions[explore] = rng.integers(0, k, int(explore.sum()))
        prob = (1 - epsilon) * probs[np.arange(n), actions].astype(np.float64) + epsilon / k
        with np.errstate(divide="ignore"):  # a probability that rounded to 0 has log -inf: say so
            return actions, np.log(prob).astype(np.float32)

    def greedy(self, probs: np.ndarray) -> np.ndarray:
        return probs.argmax(axis=1)

    def to_env(self, actions: _A) -> _A:
        return actions

    def to_python(self, action) -> int:
        return int(action)


class GaussianActions:
    """Box actions from a diagonal Gaussian; parameters are ``[mean | std]`` rows of width 2*dim.

    The policy acts in the normalized box [-1, 1]^dim. The sampled (unclipped)
    action is what is trained on; the environment gets it clipped to [-1, 1]
    and mapped onto its own bounds. Epsilon exploration draws uniformly from
    the normalized box.
    """

    continuous = True
    dtype = np.float32

    def __init__(self, low: np.ndarray, high: np.ndarray):
        self.low = np.asarray(low, dtype=np.float32).reshape(-1)
        self.high = np.asarray(high, dtype=np.float32).reshape(-1)
        self.dim = self.low.size
        self.shape = (self.dim,)
        self._center, self._half = (self.high + self.low) / 2, (self.high - self.low) / 2

    def choose(self, params: np.ndarray, epsilon, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Sampled actions and their log-density under the behaviour policy mu: the Gaussian mixed with
        epsilon's uniform over the normalized box (float32; computed in logs, so it never underflows)."""
        mean, std = params[:, :self.dim], params[:, self.dim:]
        z = rng.standard_normal(mean.shape, dtype=np.float32)
        actions = mean + std * z
        explore = rng.random(len(params)) < epsilon
        if explore.any():
            actions[explore] = rng.uniform(-1.0, 1.0, (int(explore.sum()), self.dim)).astype(np.float32)
            z = (actions - mean) / std
        z64, std64 = z.astype(np.float64), std.astype(np.float64)
        log_gauss = -0.5 * (z64 ** 2).sum(1) - np.log(std64).sum(1) - 0.5 * self.dim * np.log(2 * np.pi)
        eps = np.broadcast_to(np.asarray(epsilon, dtype=np.float64), log_gauss.shape)
        inside = (np.abs(actions) <= 1.0).all(axis=1)
        with np.errstate(divide="ignore"):  # epsilon 0 or an action outside the box: that part has log 0
            log_uniform = np.where(inside, np.log(eps) - self.dim * np.log(2.0), -np.inf)
            log_mu = np.logaddexp(np.log1p(-eps) + log_gauss, log_uniform)
        return actions, log_mu.astype(np.float32)

    def greedy(self, params: np.ndarray) -> np.ndarray:
        return params[:, :self.dim].copy()

    def to_env(self, actions: npt.ArrayLike) -> np.ndarray:
        return (self._center + self._half * np.clip(actions, -1.0, 1.0)).astype(np.float32)

    def to_python(self, action) -> list[float]:
        return np.asarray(action, dtype=np.float64).reshape(-1).tolist()


#: Either kind of action head.
Actions = DiscreteActions | GaussianActions


def for_spec(spec) -> Actions:
    """The action handling for an ``EnvSpec``."""
    if spec.action_kind == "box":
        return GaussianActions(spec.action_low, spec.action_high)
    return DiscreteActions(spec.n_actions)
