"""TensorBoard event files for a run: stable tags, one point per progress report.

Written from the progress rows the trainer already makes every
``log_interval`` (not per episode: thousands of episodes end each second), at
the global step of the environment-step count. ``SummaryWriter`` queues events
to its own writer thread, so the event loop only pays for the enqueue.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from asynca3c.config import Config
from asynca3c.core.messages import MetricsRow
from asynca3c.errors import ConfigError

#: The numeric progress-row keys that have a tag.
ScalarKey = Literal[
    "eval_return_mean", "train_return_mean", "episode_length_mean", "steps_per_second", "policy_loss",
    "value_loss", "entropy", "grad_norm", "policy_lag_mean", "queue_depth", "loop_lag_p99_ms", "loop_lag_max_ms",
    "policy_lag_max", "rho_mean", "rho_clipped_fraction", "kl_behaviour", "nonfinite_steps",
    "env_faults", "learner_restarts", "shard_restarts",
]

#: TensorBoard tag -> progress-row key. Tags are part of the interface: keep them stable.
TAGS: dict[str, ScalarKey] = {
    "rollout/episodic_return": "eval_return_mean",  # episodes without epsilon, as judged for 'solved'
    "rollout/explore_episodic_return": "train_return_mean",  # episodes with epsilon at some step
    "rollout/episodic_length": "episode_length_mean",
    "time/steps_per_second": "steps_per_second",
    "losses/policy_loss": "policy_loss",
    "losses/value_loss": "value_loss",
    "losses/entropy": "entropy",
    "losses/grad_norm": "grad_norm",
    "async/policy_lag": "policy_lag_mean",
    "async/queue_depth": "queue_depth",
    "async/loop_lag_p99_ms": "loop_lag_p99_ms",
    "async/loop_lag_max_ms": "loop_lag_max_ms",
    "async/policy_lag_max": "policy_lag_max",
    "async/rho_mean": "rho_mean",  # mean pi/mu: 1 on-policy
    "async/rho_clipped_fraction": "rho_clipped_fraction",
    "async/kl_mu_pi": "kl_behaviour",
    "losses/nonfinite_steps": "nonfinite_steps",
    "faults/env_faults": "env_faults",
    "faults/learner_restarts": "learner_restarts",
    "faults/shard_restarts": "shard_restarts",
}
HPARAMS_TAG = "hyperparameters"


class TensorBoardLog:
    """Event files in ``directory``; the hyperparameters as a text table at step 0."""

    def __init__(self, directory: str | Path, config: Config):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("tensorboard=True needs the tensorboard package: "
                              "pip install 'asynca3c[tensorboard]'") from None
        self.writer = SummaryWriter(log_dir=str(directory))
        table = "\n".join(f"|{k}|{v}|" for k, v in config.to_dict().items())
        self.writer.add_text(HPARAMS_TAG, "|setting|value|\n|-|-|\n" + table, 0)

    def write(self, row: MetricsRow) -> None:
        step = int(row["env_steps"])
        for tag, key in TAGS.items():
            value = row.get(key)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                self.writer.add_scalar(tag, float(value), step)

    def close(self) -> None:
        self.writer.close()
