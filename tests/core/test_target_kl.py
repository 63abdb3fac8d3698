"""target_kl: a batch's gradient steps stop once its policy has moved that far (approximate KL) from
where the batch began, so many epochs at a high lr cannot throw the policy far on one batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asynca3c import Config
from asynca3c.config import ConfigError
from asynca3c.core.learner import Learner, _approx_kl
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
    assert steps[1e-12] == 1  # the first step is never stopped; after it, any move stops the batch
    assert 1 < steps[1e-3] < 8
    moved = {t: kl_from_start(untouched, ln, seg) for t, ln in full.items()}
    assert moved[1e-3] < moved[0.0]
    # it stopped because the step it did not take would have started beyond the bound
    assert moved[1e-3] > 1e-3 * 0.5


def test_samples_of_steps_not_taken_are_not_counted_as_trained(random_segment):
    seg = random_segment(16, 8)
    full, stopped = learner(0.0).learn(seg)[0], learner(1e-12).learn(seg)[0]
    assert full.batch_size == 4 * 16 * 8  # epochs x the batch's valid samples
    assert stopped.batch_size == 16 * 8 // 2  # one minibatch of half the columns


def test_the_estimate_ignores_invalid_steps_whatever_their_values():
    rng = np.random.default_rng(1)
    log_ratio = torch.from_numpy(rng.normal(scale=0.3, size=(6, 4))).float()
    valid = torch.ones(6, 4, dtype=torch.bool)
    valid[2, 1] = valid[5, :] = False
    count = valid.float().sum()
    garbage = log_ratio.clone()
    garbage[~valid] = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e30, -1e30])
    r = log_ratio[valid].double().exp()
    expected = float(((r - 1) - log_ratio[valid].double()).mean())  # KL(old || new) estimated on old's samples
    assert _approx_kl(garbage, valid, count) == pytest.approx(expected, rel=1e-5)
    assert _approx_kl(torch.zeros(6, 4), valid, count) == 0.0  # the same policy: no distance
