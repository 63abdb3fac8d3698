"""The actor-critic network and the seed's A3C loss; plain torch, no asyncio."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


class ActorCritic(nn.Module):
    """Shared hidden layers, a softmax policy head (as logits) and a linear value head."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: tuple[int, ...] = (16,)):
        super().__init__()
        layers, width = [], obs_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.policy = nn.Linear(width, n_actions)
        self.value = nn.Linear(width, 1)
        self.obs_dim, self.n_actions, self.hidden = obs_dim, n_actions, tuple(hidden)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(policy logits [B, A], values [B])."""
        h = self.body(obs)
        return self.policy(h), self.value(h).squeeze(-1)


@dataclass
class LossTerms:
    total: torch.Tensor
    policy: torch.Tensor
    value: torch.Tensor
    entropy: torch.Tensor  # mean policy entropy H (>= 0)


def a3c_loss(
    logits: torch.Tensor,
    values: torch.Tensor,
    actions: torch.Tensor,
    targets: torch.Tensor,
    value_coef: float,
    entropy_coef: float,
) -> LossTerms:
    """The seed's loss, averaged over the batch.

    ``-log pi(a|s) * A`` with the advantage ``A = target - V(s)`` held constant,
    plus ``c_v * A**2`` (this term trains the critic), plus ``c_e * sum(p log p)``
    (minimizing it maximizes entropy). ``targets`` must carry no gradient.
    """
    advantage = targets - values
    logp_all = F.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    neg_entropy = (logp_all.exp() * logp_all).sum(-1)
    policy = -(logp * advantage.detach()).mean()
    value = advantage.pow(2).mean()
    total = policy + value_coef * value + entropy_coef * neg_entropy.mean()
    return LossTerms(total, policy.detach(), value.detach(), -neg_entropy.mean().detach())
