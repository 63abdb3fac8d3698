"""Running observation normalization: statistics kept by the learner, shipped with the weights to the
acting copy, saved and rebuilt with the network."""

from __future__ import annotations

import numpy as np
import torch

from asynca3c import Config, train
from asynca3c.core.learner import Learner
from asynca3c.core.messages import Segment
from asynca3c.core.model import OBS_CLIP, ActorCritic


def test_running_statistics_match_numpy_over_many_batches():
    model = ActorCritic(3, 2, (8,), running_norm=True)
    rng = np.random.default_rng(0)
    batches = [rng.normal([5.0, -3.0, 100.0], [0.5, 2.0, 30.0], size=(n, 3)).astype(np.float32) for n in (7, 300, 1)]
    for b in batches:
        model.update_obs_stats(torch.from_numpy(b))
    every = np.concatenate(batches).astype(np.float64)
    np.testing.assert_allclose(model.obs_mean.numpy(), every.mean(0), rtol=1e-9)
    np.testing.assert_allclose(model.obs_var.numpy(), every.var(0), rtol=1e-9)
    assert float(model.obs_count) == len(every)
    np.testing.assert_allclose(model.obs_center.numpy(), every.mean(0), rtol=1e-6)
    np.testing.assert_allclose(model.obs_scale.numpy(), 1 / np.sqrt(every.var(0) + 1e-8), rtol=1e-5)


def test_bounded_dimensions_keep_their_bounds_and_outliers_are_clipped():
    bounds = (np.array([-1.0, -np.inf]), np.array([3.0, np.inf]))
    model = ActorCritic(2, 2, (4,), obs_bounds=bounds, running_norm=True)
    model.update_obs_stats(torch.tensor([[0.0, 10.0], [2.0, 20.0]]))
    torch.testing.assert_close(model.obs_center, torch.tensor([1.0, 15.0]))
    torch.testing.assert_close(model.obs_scale[0], torch.tensor(0.5))  # the bounds' map, not the batch's
    seen = []
    model.body.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0]))
    model(torch.tensor([[1.0, 1e9]]))
    assert float(seen[0][0, 1]) == OBS_CLIP


def test_the_learner_updates_the_statistics_and_ships_them_to_the_acting_copy():
    model = ActorCritic(2, 2, (8,), running_norm=True)
    learner = Learner(model, Config(batch_envs=4, minibatches=1, epochs=1), torch.device("cpu"))
    T, E = 5, 4
    seg = Segment.empty(T, E, 2, (), np.int64)
    seg.obs[:] = np.random.default_rng(1).normal(50.0, 4.0, size=seg.obs.shape)
    seg.valid[:] = True
    seg.behaviour_logp[:] = np.log(0.5)
    _, weights = learner.learn(seg)
    np.testing.assert_allclose(learner.model.obs_mean.numpy(), seg.obs[:T].reshape(-1, 2).mean(0), rtol=1e-6)
    acting = ActorCritic(2, 2, (8,), running_norm=True)
    with torch.no_grad():
        torch._foreach_copy_(acting.shipped(), weights)
    torch.testing.assert_close(acting.obs_center, learner.model.obs_center)
    torch.testing.assert_close(acting.obs_scale, learner.model.obs_scale)


def test_a_run_saves_the_statistics_and_its_model_file_rebuilds_them(tmp_path):
    from asynca3c.outputs import checkpoint
    train(Config(env="Pendulum-v1", running_obs_norm=True, agents=1, envs_per_agent=8, batch_envs=8, seconds=1.0,
                 final_eval_episodes=0, log_interval=0.2, learner="thread"), run_dir=tmp_path)
    model, _, _ = checkpoint.load_policy(tmp_path / "model.pt")
    assert model.running_norm and float(model.obs_count) > 1000
    # Pendulum's cos, sin and angular velocity: statistics of what the agents saw, not the defaults
    assert (model.obs_center != 0).all() and (model.obs_scale != 1).all()
    state = checkpoint.load(tmp_path)
    assert state["network"]["running_norm"] is True
    torch.testing.assert_close(state["model"]["obs_mean"], model.obs_mean)


def test_halfcheetah_trains_with_running_normalization_and_a_six_dimensional_gaussian(tmp_path):
    """MuJoCo's infinite bounds: the shipped table's kind of run starts, trains and saves (the test extra
    installs mujoco)."""
    from asynca3c.outputs import checkpoint
    result = train(Config(env="HalfCheetah-v5", running_obs_norm=True, log_std_init=-1.0, agents=1,
                          envs_per_agent=4, batch_envs=4, seconds=1.5, final_eval_episodes=1, log_interval=0.5,
                          learner="thread"), run_dir=tmp_path)
    assert result.updates > 0 and result.eval_episodes == 1 and np.isfinite(result.eval_mean_return)
    model, _, _ = checkpoint.load_policy(tmp_path / "model.pt")
    assert model.continuous and model.n_actions == 6 and float(model.obs_count) > 0
