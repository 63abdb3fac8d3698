"""The actor-critic network and the seed's A3C loss; plain torch, no asyncio."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


class ActorCritic(nn.Module):
    """Shared hidden layers, a policy head and a linear value head.

    Discrete actions: the policy head gives logits of a softmax. Continuous
    (Box) actions: it gives the mean of a diagonal Gaussian, squashed into
    [-1, 1] by tanh (the action box, normalized; an unbounded mean drifted far
    outside the box, where clipping hides every difference between actions),
    whose log standard deviation is a learned, state-independent parameter;
    ``forward`` then returns ``[mean | log_std]`` so both kinds travel as one tensor.
    """

    obs_center: torch.Tensor  # registered buffers
    obs_scale: torch.Tensor

    def __init__(self, obs_dim: int, n_actions: int, hidden: tuple[int, ...] = (16,), continuous: bool = False,
                 obs_bounds: tuple | None = None):
        """``obs_bounds``: (low, high) of a Box observation space; dimensions with finite bounds are
        mapped onto [-1, 1] before the first layer (a velocity within +-0.07 is otherwise invisible)."""
        super().__init__()
        center, scale = torch.zeros(obs_dim), torch.ones(obs_dim)
        if obs_bounds is not None:
            low, high = (torch.as_tensor(b, dtype=torch.float32).reshape(-1) for b in obs_bounds)
            finite = torch.isfinite(low) & torch.isfinite(high) & (high > low)
            center[finite] = (high[finite] + low[finite]) / 2
            scale[finite] = 2 / (high[finite] - low[finite])
        self.register_buffer("obs_center", center)
        self.register_buffer("obs_scale", scale)
        layers, width = [], obs_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.policy = nn.Linear(width, n_actions)
        self.value = nn.Linear(width, 1)
        if continuous:
            self.log_std = nn.Parameter(torch.zeros(n_actions))
        self.obs_dim, self.n_actions, self.hidden, self.continuous = obs_dim, n_actions, tuple(hidden), continuous

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(policy output [B, A] (logits) or [B, 2A] (mean | log_std), values [B])."""
        h = self.body((obs - self.obs_center) * self.obs_scale)
        out = self.policy(h)
        if self.continuous:
            out = torch.cat([torch.tanh(out), self.log_std.expand_as(out)], dim=-1)
        return out, self.value(h).squeeze(-1)

    def action_params(self, out: torch.Tensor) -> torch.Tensor:
        """What agents sample from: probabilities, or ``[mean | std]``."""
        if self.continuous:
            mean, log_std = out.chunk(2, dim=-1)
            return torch.cat([mean, log_std.exp()], dim=-1)
        return torch.softmax(out, dim=-1)

    def log_prob_entropy(self, out: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log pi(a|s) [B] and the policy's entropy [B] (differential entropy for a Gaussian)."""
        if self.continuous:
            mean, log_std = out.chunk(2, dim=-1)
            z = (actions - mean) * torch.exp(-log_std)
            logp = (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
            entropy = (log_std + 0.5 * (1.0 + math.log(2 * math.pi))).sum(-1)
            return logp, entropy
        logp_all = F.log_softmax(out, dim=-1)
        logp = logp_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        return logp, -(logp_all.exp() * logp_all).sum(-1)


@dataclass
class LossTerms:
    total: torch.Tensor
    policy: torch.Tensor
    value: torch.Tensor
    entropy: torch.Tensor  # mean policy entropy H


def a3c_loss(
    logp: torch.Tensor,
    entropy: torch.Tensor,
    values: torch.Tensor,
    targets: torch.Tensor,
    value_coef: float,
    entropy_coef: float,
) -> LossTerms:
    """The seed's loss, averaged over the batch.

    ``-log pi(a|s) * A`` with the advantage ``A = target - V(s)`` held constant,
    plus ``c_v * A**2`` (this term trains the critic), minus ``c_e * H`` (for a
    softmax, ``+ c_e * sum(p log p)``: minimizing it maximizes entropy).
    ``targets`` must carry no gradient.
    """
    advantage = targets - values
    policy = -(logp * advantage.detach()).mean()
    value = advantage.pow(2).mean()
    mean_entropy = entropy.mean()
    total = policy + value_coef * value - entropy_coef * mean_entropy
    return LossTerms(total, policy.detach(), value.detach(), mean_entropy.detach())
