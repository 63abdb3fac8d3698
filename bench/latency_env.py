"""An async environment for benchmarks and tests: CartPole behind a fixed latency.

It stands in for a simulator behind a network call: every ``reset`` and
``step`` awaits ``latency`` seconds on the event loop, then advances the
classic cart-pole equations (gymnasium's CartPole-v1 constants, Euler steps,
500-step limit) in plain Python floats, so the environment's own compute stays
at a couple of microseconds and the benchmark measures the machinery.
"""

from __future__ import annotations

import asyncio
import math
import random

import gymnasium as gym
import numpy as np

GRAVITY, CART_MASS, POLE_MASS, HALF_POLE, FORCE, DT = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
TOTAL_MASS, POLE_MASS_LENGTH = CART_MASS + POLE_MASS, POLE_MASS * HALF_POLE
THETA_LIMIT, X_LIMIT = 12 * 2 * math.pi / 360, 2.4
HIGH = np.array([X_LIMIT * 2, np.inf, THETA_LIMIT * 2, np.inf], dtype=np.float32)


class LatencyCartPole:
    """Async CartPole: each ``reset``/``step`` awaits ``latency`` seconds first."""

    observation_space = gym.spaces.Box(-HIGH, HIGH, dtype=np.float32)
    action_space = gym.spaces.Discrete(2)
    spec = gym.spec("CartPole-v1")  # reward_threshold 475

    def __init__(self, latency: float = 0.002, max_steps: int = 500):
        if latency < 0:
            raise ValueError(f"latency must be >= 0 seconds, got {latency!r}")
        self.latency, self.max_steps = latency, max_steps
        self._rng = random.Random()
        self._state = (0.0, 0.0, 0.0, 0.0)
        self._t = 0

    async def reset(self, *, seed: int | None = None, options: dict | None = None):
        await asyncio.sleep(self.latency)
        return self.reset_now(seed)

    async def step(self, action):
        await asyncio.sleep(self.latency)
        return self.step_now(action)

    def reset_now(self, seed: int | None = None):
        """The reset without the latency (for drivers that wait their own way, e.g. threads)."""
        if seed is not None:
            self._rng.seed(seed)
        self._state = tuple(self._rng.uniform(-0.05, 0.05) for _ in range(4))
        self._t = 0
        return self._state, {}

    def step_now(self, action):
        """The step without the latency."""
        x, x_dot, theta, theta_dot = self._state
        force = FORCE if action == 1 else -FORCE
        cos, sin = math.cos(theta), math.sin(theta)
        temp = (force + POLE_MASS_LENGTH * theta_dot * theta_dot * sin) / TOTAL_MASS
        theta_acc = (GRAVITY * sin - cos * temp) / (HALF_POLE * (4.0 / 3.0 - POLE_MASS * cos * cos / TOTAL_MASS))
        x_acc = temp - POLE_MASS_LENGTH * theta_acc * cos / TOTAL_MASS
        self._state = (x + DT * x_dot, x_dot + DT * x_acc, theta + DT * theta_dot, theta_dot + DT * theta_acc)
        self._t += 1
        terminated = abs(self._state[0]) > X_LIMIT or abs(self._state[2]) > THETA_LIMIT
        return self._state, 1.0, terminated, self._t >= self.max_steps and not terminated, {}

    def close(self) -> None:
        pass
