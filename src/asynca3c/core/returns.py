"""n-step discounted returns: the public face of the compiled kernel.

``NStepKernel`` (compiled, streaming) is what agents use while acting;
``nstep_returns`` runs one whole trajectory through the same compiled code.
``reference_nstep_returns`` and ``ReferenceNStepBuffer`` are a plain-Python twin
written for clarity after the seed's ``get_sample`` loop; tests and benchmarks
compare against them. There is no fallback from the kernel to the twin.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from asynca3c.checks import check_gamma_n
from asynca3c.core._returns import NStepKernel, as_flag_array, as_float_array, trajectory_returns

__all__ = [
    "NStepKernel",
    "ReferenceNStepBuffer",
    "check_gamma_n",
    "nstep_returns",
    "reference_nstep_returns",
]


def _trajectory_arrays(rewards, terminated, truncated):
    r = as_float_array(rewards, "rewards")
    te = as_flag_array(terminated, "terminated")
    tr = as_flag_array(truncated, "truncated")
    if not (len(r) == len(te) == len(tr)):
        raise ValueError(
            f"rewards, terminated and truncated must have the same length, "
            f"got {len(r)}, {len(te)} and {len(tr)}"
        )
    bad = np.flatnonzero(~np.isfinite(r))
    if bad.size:
        raise ValueError(f"rewards must be finite, got {float(r[bad[0]])!r} at index {bad[0]}")
    return r, te, tr


def nstep_returns(rewards, terminated, truncated, gamma: float, n: int):
    """n-step returns and bootstrap discounts of one trajectory.

    ``returns[t]`` sums ``gamma**i * rewards[t+i]`` over the k = min(n, steps
    to the episode's end) steps of sample t; ``discounts[t]`` is ``gamma**k``,
    or 0 when the episode terminated within those k steps. The end of the
    arrays counts as a truncation. Runs on the compiled kernel. n is at most
    ``asynca3c.checks.MAX_N``.
    """
    check_gamma_n(gamma, n)
    r, te, tr = _trajectory_arrays(rewards, terminated, truncated)
    returns = np.empty(len(r), dtype=np.float64)
    discounts = np.empty(len(r), dtype=np.float64)
    if len(r):
        # A window never holds more than the trajectory: a larger n gives the same results.
        trajectory_returns(NStepKernel(1, min(int(n), len(r)), float(gamma)), r, te, tr, returns, discounts)
    return returns, discounts


class ReferenceNStepBuffer:
    """Plain-Python twin of ``NStepKernel.push_one``, written like the seed.

    Keeps the episode's last n rewards in a list, computes each return with the
    seed's ``get_sample`` loop and empties the list at an episode end. Returns
    the emitted samples as ``(env, start, boot, return, discount)`` tuples.
    """

    def __init__(self, num_envs: int, n: int, gamma: float):
        check_gamma_n(gamma, n)
        self.n, self.gamma = n, float(gamma)
        self.memory: list[deque[tuple[int, float]]] = [
            deque() for _ in range(num_envs)
        ]  # (step, reward) pairs
        self.steps = [0] * num_envs

    def _sample(self, env, k, terminated):
        memory = self.memory[env]
        ret = 0.0
        for i in range(k):
            ret += memory[i][1] * self.gamma**i
        start = memory[0][0]
        discount = 0.0 if terminated else self.gamma**k
        return (env, start, start + k, ret, discount)

    def push_one(self, env, reward, terminated=False, truncated=False):
        if not math.isfinite(reward):
            raise ValueError(f"rewards must be finite, got {reward!r} for env {env}")
        memory = self.memory[env]
        memory.append((self.steps[env], reward))
        self.steps[env] += 1
        samples = []
        if terminated or truncated:
            while memory:
                samples.append(self._sample(env, len(memory), terminated))
                memory.popleft()
        elif len(memory) >= self.n:
            samples.append(self._sample(env, self.n, False))
            memory.popleft()
        return samples


def reference_nstep_returns(rewards, terminated, truncated, gamma: float, n: int):
    """Plain-Python twin of ``nstep_returns`` (same semantics, no kernel)."""
    r, te, tr = _trajectory_arrays(rewards, terminated, truncated)
    buf = ReferenceNStepBuffer(1, n, gamma)
    returns = np.empty(len(r), dtype=np.float64)
    discounts = np.empty(len(r), dtype=np.float64)
    for t in range(len(r)):
        for _, start, _, ret, disc in buf.push_one(
            0, float(r[t]), bool(te[t]), bool(tr[t]) or t == len(r) - 1
        ):
            returns[start], discounts[start] = ret, disc
    return returns, discounts
