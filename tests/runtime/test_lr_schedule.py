"""The learning-rate schedule: 'linear' decays lr to 0 over the run's budget, computed on the loop side
from what the run has spent and applied by the learner wherever it runs."""

from __future__ import annotations

import time

import pytest
import torch

from asynca3c import Config, train
from asynca3c.config import ConfigError
from asynca3c.core.learner import Learner
from asynca3c.core.model import ActorCritic
from asynca3c.runtime.progress import Progress
from asynca3c.runtime.updates import lr_factor


def test_bad_schedules_are_refused_naming_what_is_allowed():
    with pytest.raises(ConfigError, match=r"lr_schedule='cosine'.*constant or linear"):
        Config(lr_schedule="cosine")
    with pytest.raises(ConfigError, match=r"lr_schedule='linear'.*a budget.*or lr_schedule='constant'"):
        Config(lr_schedule="linear", seconds=0, steps=0)
    with pytest.raises(ConfigError, match=r"lr_schedule='linear'.*steps > 0"):  # time would break repeatability
        Config(lr_schedule="linear", deterministic=True, agents=1, seconds=30, steps=0)
    assert Config(lr_schedule="linear", seconds=0, steps=1000).lr_schedule == "linear"


def test_the_budget_spent_is_the_larger_fraction_of_seconds_and_steps():
    p = Progress(100, None)
    p.start = time.perf_counter() - 10.0  # 10 s in
    p.env_steps = 300
    assert p.budget_spent(40.0, 0) == pytest.approx(0.25, abs=0.01)
    assert p.budget_spent(0.0, 1000) == pytest.approx(0.3)
    assert p.budget_spent(40.0, 1000) == pytest.approx(0.3)
    assert p.budget_spent(0.0, 0) == 0.0  # no budget: nothing is ever spent
    assert p.budget_spent(5.0, 0) == 1.0  # past the budget (the drain): clamped
    assert lr_factor("linear", p, 0.0, 1000)() == pytest.approx(0.7)
    assert lr_factor("constant", p, 0.0, 1000)() == 1.0
    with pytest.raises(ValueError, match="'step'"):
        lr_factor("step", p, 0.0, 1000)


def learner() -> Learner:
    torch.manual_seed(0)
    model = ActorCritic(4, 2, (16,), running_norm=True)
    return Learner(model, Config(lr=0.01, epochs=1, minibatches=2, running_obs_norm=True), torch.device("cpu"))


def test_the_learner_steps_at_the_factor_it_is_given(random_segment):
    seg = random_segment(8, 4)
    ln = learner()
    before = {k: v.clone() for k, v in ln.model.state_dict().items()}
    stats, _ = ln.learn(seg, 0.0)
    assert stats.steps == 2  # steps were taken (a new policy version each), at lr 0: nothing moved, the
    # observation normalizer's statistics included
    for name, tensor in ln.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    ln.learn(seg, 0.5)
    assert [g["lr"] for g in ln.optimizer.param_groups] == [pytest.approx(0.005)]
    assert not all(torch.equal(t, before[k]) for k, t in ln.model.state_dict().items())
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="lr factor"):
            ln.learn(seg, bad)


@pytest.mark.parametrize("learner_where", ["process", "thread"])
def test_a_linear_run_ends_with_a_small_lr(tmp_path, learner_where):
    """Through the whole runtime (the worker process or executor threads): the optimizer's lr in the final
    checkpoint is what the schedule left of it when the last batch was trained."""
    cfg = Config(deterministic=True, agents=1, envs_per_agent=8, batch_envs=8, segment_length=8, steps=2_000,
                 seconds=0, final_eval_episodes=0, lr=0.002, learner=learner_where, lr_schedule="linear")
    result = train(cfg, run_dir=tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    [lr] = [g["lr"] for g in state["optimizer"]["param_groups"]]
    assert result.updates > 0
    # the last batch of 64 steps was trained with at most 64 of the 2000 steps left
    assert 0.0 <= lr <= 0.002 * 64 / 2000 + 1e-12
