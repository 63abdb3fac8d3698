"""target_kl: a batch's gradient steps stop once its policy has moved that far (approximate KL) from
where the batch began, so many epochs at a high lr cannot throw the policy far on one batch."""

from __future__ import annotations

import pytest
import torch

from asynca3c import Config
from asynca3c.config import ConfigError
from asynca3c.core.learner import Learner
from asynca3c.core.model import ActorCritic


def test_bad_target_kls_are_refused_naming_what_is_allowed():
    for bad in (-0.01, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=r"target_kl=.*a finite number >= 0 \(0: off\)"):
            Config(target_kl=bad)
    assert Config(target_kl=0.02).target_kl == 0.02


def learner(target_kl: float, lr: float = 0.002) -> Learner:
    torch.manual_seed(0)
    model = ActorCritic(4, 2, (16,))
    cfg = Config(lr=lr, epochs=4, minibatches=2, target_kl=target_kl)
    return Learner(model, cfg, torch.device("cpu"))


def kl_from_start(before: Learner, after: Learner, seg) -> float:
    """Mean KL(before || after) of the two policies over the segment's observations."""
    obs = torch.from_numpy(seg.obs[:-1].reshape(-1, 4))
    with torch.no_grad():
        p = torch.softmax(before.model(obs)[0], -1)
        q = torch.softmax(after.model(obs)[0], -1)
    return float((p * (p.log() - q.log())).sum(-1).mean())


def test_the_steps_stop_once_the_policy_has_moved_target_kl_from_the_batch_start(random_segment):
    seg = random_segment(16, 8)
    untouched = learner(0.0)
    full = {t: learner(t) for t in (0.0, 1e9, 1e-12, 1e-3)}
    steps = {t: ln.learn(seg)[0].steps for t, ln in full.items()}
    assert steps[0.0] == steps[1e9] == 8  # off, or never reached: epochs x minibatches
    assert steps[1e-12] == 1  # the first step starts where the batch began (KL 0); after it, any move stops it
    assert 1 < steps[1e-3] < 8
    moved = {t: kl_from_start(untouched, ln, seg) for t, ln in full.items()}
    assert moved[1e-3] < moved[0.0]
    # it stopped because the step it did not take would have started beyond the bound
    assert moved[1e-3] > 1e-3 * 0.5
