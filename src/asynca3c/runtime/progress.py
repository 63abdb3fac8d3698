"""Counters and episode statistics of a run, and the 'solved' rule.

Plain synchronous bookkeeping, written to by agents and optimizer tasks on the
loop thread and read by the trainer's monitor.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from asynca3c.core.messages import ProgressRow, StepStats


class Progress:
    """What happened so far. 'Solved': the mean return of the last ``window`` judged episodes (played
    without epsilon at every step, by whichever agent) reaches ``threshold``."""

    def __init__(self, window: int, threshold: float | None, on_solved: Callable[[], None] | None = None):
        self.start = time.perf_counter()
        self.offset = 0.0  # seconds trained before a resume
        self.window, self.threshold, self.on_solved = window, threshold, on_solved
        self.env_steps = 0
        self.episodes = 0
        self.updates = 0
        self.samples_trained = 0
        self.lag_sum = 0.0
        self.nonfinite_steps = 0
        self.env_faults = 0  # environments that faulted (and were restarted, or stopped the run)
        self.learner_restarts = 0  # learner processes that died and were started again
        self.shard_restarts = 0  # acting shards whose process died or went silent, started again
        self.train_returns: deque[float] = deque(maxlen=window)
        self.eval_returns: deque[float] = deque(maxlen=window)
        self.lengths: deque[int] = deque(maxlen=window)  # of all agents' episodes
        self.eval_episodes = 0
        self.solved_after_seconds: float | None = None
        self.solved_after_steps: int | None = None
        self.last_stats: StepStats | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.start + self.offset

    def budget_spent(self, seconds: float, steps: int) -> float:
        """The fraction of the run's budget spent, in [0, 1]: the larger one of the seconds and the env
        steps (a budget of 0 is no limit and counts as nothing spent)."""
        spent = max(self.elapsed() / seconds if seconds > 0 else 0.0, self.env_steps / steps if steps > 0 else 0.0)
        return min(1.0, max(0.0, spent))

    #: What a checkpoint keeps so a resumed run continues its counters and its solve window.
    _KEPT = ("env_steps", "episodes", "updates", "samples_trained", "lag_sum", "eval_episodes",
             "solved_after_seconds", "solved_after_steps", "nonfinite_steps", "env_faults", "learner_restarts",
             "shard_restarts")
    #: Counters added after the first checkpoints were written: older checkpoints resume them at 0.
    _LATER = ("nonfinite_steps", "env_faults", "learner_restarts", "shard_restarts")

    def state(self) -> dict:
        """Counters, seconds so far and the recent returns, as plain values."""
        return {**{k: getattr(self, k) for k in self._KEPT}, "seconds": self.elapsed(),
                "train_returns": list(self.train_returns), "eval_returns": list(self.eval_returns)}

    def restore(self, state: dict) -> None:
        for k in self._KEPT:
            setattr(self, k, state.get(k, 0) if k in self._LATER else state[k])
        self.offset = float(state["seconds"])
        self.train_returns.extend(state["train_returns"])
        self.eval_returns.extend(state["eval_returns"])

    def add_episode(self, ret: float, judged: bool, length: int = 0) -> None:
        """An episode ended; ``judged``: it was played without epsilon at every step, so it counts for
        'solved' (the others are reported as exploring returns)."""
        self.episodes += 1
        self.lengths.append(length)
        (self.eval_returns if judged else self.train_returns).append(ret)
        if not judged:
            return
        self.eval_episodes += 1
        if (self.solved_after_seconds is None and self.threshold is not None
                and len(self.eval_returns) == self.window and self.eval_mean() >= self.threshold):
            self.solved_after_seconds = self.elapsed()
            self.solved_after_steps = self.env_steps
            if self.on_solved is not None:
                self.on_solved()

    def add_update(self, stats: StepStats) -> None:
        """A learner call's figures: ``updates`` counts gradient steps (policy versions)."""
        self.updates += stats.steps
        self.samples_trained += stats.batch_size
        self.lag_sum += stats.lag_sum
        self.nonfinite_steps += stats.nonfinite
        self.last_stats = stats

    @property
    def solved(self) -> bool:
        return self.solved_after_seconds is not None

    def eval_mean(self) -> float:
        return sum(self.eval_returns) / len(self.eval_returns) if self.eval_returns else math.nan

    def train_mean(self) -> float:
        return sum(self.train_returns) / len(self.train_returns) if self.train_returns else math.nan

    def policy_lag_mean(self) -> float:
        return self.lag_sum / self.samples_trained if self.samples_trained else math.nan

    def row(self) -> ProgressRow:
        """A flat record of the current figures (a progress CSV row, a metrics event)."""
        t = self.elapsed()
        s = self.last_stats
        return {
            "seconds": round(t, 4),
            "env_steps": self.env_steps,
            "steps_per_second": self.env_steps / t if t > 0 else 0.0,
            "episodes": self.episodes,
            "updates": self.updates,
            "eval_episodes": self.eval_episodes,
            "eval_return_mean": self.eval_mean(),
            "train_return_mean": self.train_mean(),
            "episode_length_mean": sum(self.lengths) / len(self.lengths) if self.lengths else math.nan,
            "policy_lag_mean": self.policy_lag_mean(),
            "policy_loss": s.policy_loss if s else math.nan,
            "value_loss": s.value_loss if s else math.nan,
            "entropy": s.entropy if s else math.nan,
            "grad_norm": s.grad_norm if s else math.nan,
            "policy_lag_max": s.lag_max if s else math.nan,  # of the last learner call's batch
            "rho_mean": s.rho_mean if s else math.nan,
            "rho_clipped_fraction": s.rho_clipped if s else math.nan,
            "kl_behaviour": s.kl if s else math.nan,
            "nonfinite_steps": self.nonfinite_steps,
            "env_faults": self.env_faults,
            "learner_restarts": self.learner_restarts,
            "shard_restarts": self.shard_restarts,
            "solved": self.solved,
        }
