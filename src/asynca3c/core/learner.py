"""The minimize step: one locked, synchronous update of the shared network.

Plain torch, no asyncio: the runtime's learner client decides where it runs
(a worker process or executor threads). The lock serializes updates so two steps never
interleave a backward pass with another's parameter write; the loop-side
acting copy only ever receives whole, finished weight snapshots.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
import torch

from asynca3c.config import Config
from asynca3c.core.messages import SampleBatch, StepStats
from asynca3c.core.model import ActorCritic, a3c_loss


class Learner:
    """Owns the trained network and its RMSprop state on ``device``."""

    def __init__(self, model: ActorCritic, config: Config, device: torch.device):
        self.device = device
        self.model = model.to(device)
        self.config = config
        self.optimizer = torch.optim.RMSprop(
            self.model.parameters(), lr=config.lr, alpha=config.rmsprop_alpha, eps=config.rmsprop_eps
        )
        self.lock = threading.Lock()
        self.version = 0

    def cpu_weights(self) -> list[torch.Tensor]:
        """A CPU copy of the parameters, for the acting network."""
        return [p.detach().to("cpu", copy=True) for p in self.model.parameters()]

    def state(self) -> dict:
        """Model and optimizer state plus the version, as CPU tensors (safe to save)."""
        with self.lock:
            return {"model": _to_cpu(self.model.state_dict()), "optimizer": _to_cpu(self.optimizer.state_dict()),
                    "version": self.version}

    def load(self, state: dict) -> None:
        with self.lock:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.version = int(state["version"])

    def step(self, batch: SampleBatch) -> tuple[StepStats, list[torch.Tensor]]:
        """One minimize step on ``batch``; returns its stats and the new weights."""
        cfg, dev = self.config, self.device
        with self.lock:
            b = len(batch)
            obs = torch.from_numpy(np.concatenate([batch.obs, batch.boot_obs])).to(dev)
            ret = torch.from_numpy(batch.ret).to(dev)
            discount = torch.from_numpy(batch.discount).to(dev)
            actions = torch.from_numpy(batch.action).to(dev)
            out, values = self.model(obs)
            # Bootstrap from V(s_n) of the current network, as the seed does; no gradient.
            targets = ret + discount * values[b:].detach()
            logp, entropy = self.model.log_prob_entropy(out[:b], actions)
            loss = a3c_loss(logp, entropy, values[:b], targets, cfg.value_coef, cfg.entropy_coef)
            self.optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
            self.optimizer.step()
            lag_sum = float(self.version * b - batch.version.sum())
            self.version += 1
            policy_loss, value_loss, entropy_mean, norm = torch.stack(
                [loss.policy, loss.value, loss.entropy, grad_norm.detach()]).tolist()
            stats = StepStats(self.version, b, policy_loss, value_loss, entropy_mean, norm, lag_sum=lag_sum)
            return stats, self.cpu_weights()


def _to_cpu(obj):
    """A copy of a (nested) state dict with every tensor cloned to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


@dataclass(frozen=True)
class LearnerSpec:
    """Everything that builds a Learner, as plain picklable values: it crosses the pipe to the worker."""

    config: dict
    obs_dim: int
    n_actions: int
    continuous: bool
    weights: dict  # the initial state dict, CPU tensors
    device: str

    @classmethod
    def of(cls, model: ActorCritic, config: Config, device: torch.device) -> LearnerSpec:
        weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        return cls(config.to_dict(), model.obs_dim, model.n_actions, model.continuous, weights, str(device))

    def build(self) -> Learner:
        """The Learner, in whichever process calls this."""
        cfg = Config.from_dict(self.config)
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        model = ActorCritic(self.obs_dim, self.n_actions, cfg.hidden, self.continuous)
        model.load_state_dict(self.weights)
        return Learner(model, cfg, torch.device(self.device))
