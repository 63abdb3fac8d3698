"""A pixel task a CNN learns in seconds: a bright square on the left or the right of a dark 42x42 frame, and
the action must name the side. A feed-forward policy that sees the frame scores 10 of 10 per episode; one
that guesses scores 5."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

SIZE, SQUARE, STEPS = 42, 8, 10
ENV_ID = "asynca3c-tests/SquareSide-v0"


class SquareSide(gym.Env):
    """Observations are (42, 42, 1) uint8, channels last (as gymnasium's image envs give them)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = None):
        self.observation_space = gym.spaces.Box(0, 255, (SIZE, SIZE, 1), np.uint8)
        self.action_space = gym.spaces.Discrete(2)
        self.render_mode = render_mode
        self._side, self._t, self._frame = 0, 0, np.zeros((SIZE, SIZE, 1), np.uint8)

    def _draw(self) -> np.ndarray:
        self._side = int(self.np_random.integers(2))
        frame = np.zeros((SIZE, SIZE, 1), np.uint8)
        half = SIZE // 2
        x = int(self.np_random.integers(0, half - SQUARE)) + self._side * half
        y = int(self.np_random.integers(0, SIZE - SQUARE))
        frame[y:y + SQUARE, x:x + SQUARE] = 255
        self._frame = frame
        return frame

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._draw(), {}

    def step(self, action):
        reward = float(int(action) == self._side)
        self._t += 1
        return self._draw(), reward, self._t >= STEPS, False, {}

    def render(self):
        return np.repeat(self._frame, 3, axis=2)


def register() -> str:
    """Register the task with gymnasium (once) and return its id."""
    if ENV_ID not in gym.registry:
        gym.register(ENV_ID, entry_point=SquareSide, reward_threshold=9.0)
    return ENV_ID

register()
