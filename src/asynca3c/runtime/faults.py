"""Environment faults: what counts as one, and what the run does about it (the ``env_faults`` setting).

An environment that raises, hangs past ``env_step_timeout``, or hands back an
observation of the wrong size or with non-finite numbers (or a non-finite
reward) is at fault. Training on such numbers would poison the network, so the
step is never recorded: either the run stops with one line naming the env,
the fault and the step (``fail``), or the env is closed and replaced by a new
one with a fresh seed and its unfinished segment is dropped (``restart``),
until faults come faster than ``max_env_faults_per_minute``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import numpy as np

from asynca3c.core.envs import ObsEncoder
from asynca3c.core.rewards import TrainingReward
from asynca3c.errors import EnvFault
from asynca3c.runtime.progress import Progress


def encode_checked(encode: ObsEncoder, raw, rows: int) -> tuple[np.ndarray, str | None]:
    """``rows`` raw observations as the network's input (float32 rows, or uint8 images), and why they may not
    be trained on (None: fine)."""
    spec = encode.spec
    a = np.asarray(raw)
    if spec.obs_kind == "discrete":
        if a.shape != (rows,) or not np.issubdtype(a.dtype, np.integer):
            return a, f"observations of shape {a.shape} and dtype {a.dtype} where {rows} integers were expected"
        low, high = spec.obs_start, spec.obs_start + spec.obs_dim
        if a.size and (a.min() < low or a.max() >= high):
            return a, f"an observation outside [{low}, {high}) ({int(a.min() if a.min() < low else a.max())})"
        return encode(a), None
    if a.size != rows * spec.obs_dim:
        return a, f"an observation of shape {a.shape[1:]} where the space has {spec.obs_dim} numbers"
    try:
        out = encode(a)
    except (TypeError, ValueError) as e:
        return a, f"an observation that is not numbers ({describe_exception(e)})"
    if spec.obs_kind == "image":  # uint8: every value is a pixel
        return out, None
    if not np.isfinite(out).all():
        bad = np.argwhere(~np.isfinite(out))[0]
        return out, f"a non-finite observation ({float(out[tuple(bad)])!r} for env {int(bad[0])})"
    return out, None


#: Rewards travel to the learner as float32: beyond this they would arrive as infinities.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def reward_fault(rewards: np.ndarray, how: str = "") -> str | None:
    """Why these rewards may not be trained on (non-finite, or beyond float32's range), or None."""
    ok = np.abs(rewards) <= FLOAT32_MAX  # False for NaN too
    if ok.all():
        return None
    bad = float(rewards.reshape(-1)[int(np.argmin(ok))])
    kind = "non-finite" if not np.isfinite(bad) else "float32-overflowing"
    return f"a {kind} reward{' ' + how if how else ''} ({bad!r})"


def checked_reward(raw: np.ndarray, live: np.ndarray, reward: TrainingReward, next_obs: np.ndarray
                   ) -> tuple[np.ndarray, str | None]:
    """The reward to learn from (``reward(raw, next_obs)``: scaled, with any bonus) and why the step may
    not be trained on (None: fine): the raw reward of a live env, or its scaled value, is unusable."""
    fault = reward_fault(raw[live])
    if fault is not None:
        return raw, fault
    trained = reward(raw, next_obs)
    return trained, reward_fault(trained[live], "once scaled")


def describe_exception(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer within env_step_timeout"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class FaultPolicy:
    """Counts faults in ``progress.env_faults``; raises ``EnvFault`` when the run must stop."""

    WINDOW = 60.0  # seconds over which max_per_minute is counted

    def __init__(self, restart: bool, max_per_minute: int, progress: Progress):
        self.restart, self.max_per_minute, self.progress = restart, max_per_minute, progress
        self._recent: deque[float] = deque()

    @property
    def mode(self) -> str:
        return "restart" if self.restart else "fail"

    def record(self, where: str, what: str, cause: BaseException | None = None) -> None:
        """One fault of the env named ``where``; returns when it should be restarted, raises otherwise."""
        progress = self.progress
        progress.env_faults += 1
        step = progress.env_steps
        if not self.restart:
            raise EnvFault(f"environment fault in {where} at step {step:,}: {what} (env_faults='fail'; "
                           "env_faults='restart' replaces faulty environments instead)") from cause
        now = time.monotonic()
        self._recent.append(now)
        while self._recent and now - self._recent[0] > self.WINDOW:
            self._recent.popleft()
        if len(self._recent) > self.max_per_minute:
            raise EnvFault(f"{len(self._recent)} environment faults within {self.WINDOW:.0f} s (more than "
                           f"max_env_faults_per_minute={self.max_per_minute}); the last: {where} at step "
                           f"{step:,}: {what}") from cause


def first_error(group: BaseExceptionGroup) -> BaseException | None:
    """The first failure in a (nested) exception group, the others attached as notes; None if all were
    cancellations. A host catches one exception, never a group."""
    def leaves(exc: BaseException):
        if isinstance(exc, BaseExceptionGroup):
            for e in exc.exceptions:
                yield from leaves(e)
        else:
            yield exc

    errors = [e for e in leaves(group) if not isinstance(e, asyncio.CancelledError)]
    if not errors:
        return None
    first, seen = errors[0], {(type(errors[0]), str(errors[0]))}
    for other in errors[1:]:  # the same failure met by two tasks is said once
        if (type(other), str(other)) not in seen:
            seen.add((type(other), str(other)))
            first.add_note(f"also: {type(other).__name__}: {other}")
    return first


class RestartWindow:
    """Restarts of a worker (the learner, the shards) within the last ``SECONDS``: one that keeps dying has a
    cause a restart will not fix, while a long run may survive an occasional kill forever."""

    SECONDS = 600.0

    def __init__(self, max_restarts: int):
        self.max_restarts = max_restarts
        self._times: deque[float] = deque()

    def recent(self) -> int:
        """Restarts within the window now."""
        now = time.monotonic()
        while self._times and now - self._times[0] > self.SECONDS:
            self._times.popleft()
        return len(self._times)

    def full(self) -> bool:
        return self.recent() >= self.max_restarts

    def record(self) -> None:
        self._times.append(time.monotonic())

    def refusal(self, first: str, setting: str) -> str:
        """The one line that stops a run once the window is full: ``first`` says what just died."""
        n = self.recent()
        return (f"{first} {n + 1} times within {self.SECONDS / 60:.0f} minutes; stopped after {n} restarts "
                f"({setting}={self.max_restarts})")
