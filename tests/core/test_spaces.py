"""Action and observation spaces beyond CartPole's: Box actions (the Gaussian policy, its action
handling, a training smoke run) and Discrete observations that do not start at 0."""

from __future__ import annotations

import asyncio

import gymnasium as gym
import numpy as np
import pytest
import torch

from asynca3c import Config, Trainer
from asynca3c.core.actions import DiscreteActions, GaussianActions
from asynca3c.core.envs import ObsEncoder, inspect_env
from asynca3c.core.model import ActorCritic


def test_pendulum_is_described_as_a_box_action_space():
    spec = inspect_env("Pendulum-v1")
    assert (spec.action_kind, spec.n_actions, spec.action_low, spec.action_high) == ("box", 1, (-2.0,), (2.0,))


def test_log_prob_and_entropy_match_torch_distributions():
    torch.manual_seed(0)
    model = ActorCritic(3, 2, (8,), continuous=True)
    with torch.no_grad():
        model.log_std.copy_(torch.tensor([-0.5, 0.3]))
    obs, actions = torch.randn(5, 3), torch.randn(5, 2)
    out, _ = model(obs)
    logp, entropy = model.log_prob_entropy(out, actions)
    mean = out[:, :2]
    assert torch.all(mean.abs() <= 1)  # the mean lives in the normalized box
    normal = torch.distributions.Normal(mean, model.log_std.exp())
    torch.testing.assert_close(logp, normal.log_prob(actions).sum(-1))
    torch.testing.assert_close(entropy, normal.entropy().sum(-1))
    params = model.action_params(out)
    torch.testing.assert_close(params[:, 2:], model.log_std.exp().expand(5, 2))


def test_gaussian_actions_sample_explore_and_map_onto_the_box():
    acts = GaussianActions(np.array([-2.0, 0.0]), np.array([2.0, 10.0]))
    rng = np.random.default_rng(0)
    params = np.tile(np.array([[0.5, -0.5, 0.1, 0.2]], np.float32), (20_000, 1))
    a, logp = acts.choose(params, 0.0, rng)
    assert a.shape == (20_000, 2) and a.dtype == np.float32
    np.testing.assert_allclose(a.mean(0), [0.5, -0.5], atol=0.01)
    np.testing.assert_allclose(a.std(0), [0.1, 0.2], rtol=0.03)
    expected = -0.5 * (((a - [0.5, -0.5]) / [0.1, 0.2]) ** 2).sum(1) - np.log(2 * np.pi * 0.1 * 0.2)
    np.testing.assert_allclose(logp, expected, rtol=1e-5, atol=1e-5)
    explored, _ = acts.choose(params[:1000], 1.0, rng)  # epsilon 1: uniform over the normalized box
    assert explored.min() >= -1 and explored.max() <= 1 and explored.std(0).min() > 0.5
    env_a = acts.to_env(np.array([[-1.0, 1.0], [0.0, 0.0], [5.0, -5.0]], np.float32))
    np.testing.assert_allclose(env_a, [[-2, 10], [0, 5], [2, 0]])
    np.testing.assert_allclose(acts.greedy(params[:2]), [[0.5, -0.5]] * 2)


def test_behaviour_log_probabilities_include_epsilon_and_never_underflow():
    """mu is the mixture the agent really sampled from: (1 - eps) * pi + eps * uniform."""
    rng = np.random.default_rng(1)
    gauss = GaussianActions(np.array([-1.0, -1.0]), np.array([1.0, 1.0]))
    params = np.tile(np.array([[0.5, -0.5, 0.1, 0.2]], np.float32), (5_000, 1))
    a, logp = gauss.choose(params, 0.3, rng)
    z = (a.astype(np.float64) - [0.5, -0.5]) / [0.1, 0.2]
    density = np.exp(-0.5 * (z ** 2).sum(1)) / (2 * np.pi * 0.1 * 0.2)
    inside = (np.abs(a) <= 1).all(1)
    np.testing.assert_allclose(np.exp(logp.astype(np.float64)), 0.7 * density + 0.3 * inside / 4, rtol=1e-4)
    far = np.array([[0.9, 0.9, 1e-3, 1e-3]], np.float32)  # a uniform draw 1000 stds away
    for _ in range(20):
        a1, lp1 = gauss.choose(far, 1.0, rng)
        assert np.isfinite(lp1).all() and lp1[0] == pytest.approx(np.log(0.25))
    _, lp0 = gauss.choose(np.array([[0.0, 0.0, 1e-3, 1e-3]], np.float32), 0.0, rng)
    assert np.isfinite(lp0).all()  # float32 densities of such a narrow Gaussian overflow; logs do not
    discrete = DiscreteActions(4)
    probs = np.array([[0.7, 0.1, 0.1, 0.1]], np.float32)
    acts, lp = discrete.choose(np.repeat(probs, 1000, 0), 0.2, rng)
    np.testing.assert_allclose(np.exp(lp), 0.8 * probs[0, acts] + 0.05, rtol=1e-6)


def test_a_continuous_action_run_trains_and_acts_within_the_bounds(tmp_path):
    cfg = Config(env="Pendulum-v1", agents=1, envs_per_agent=16, eval_envs=8, hidden=(16,), gamma=0.9,
                 reward_scale=0.1, lr=3e-4, epsilon_start=(0.0,), entropy_coef=0.0, seconds=2.0,
                 final_eval_episodes=4, device="cpu", log_interval=0.5)

    async def main():
        async with Trainer(cfg, run_dir=tmp_path) as t:
            obs = np.array([1.0, 0.0, 0.0], np.float32)
            sampled = [await t.act(obs) for _ in range(20)]
            greedy = await t.act(obs, deterministic=True)
            return sampled, greedy, await t.wait()

    sampled, greedy, result = asyncio.run(main())
    assert all(isinstance(a, list) and len(a) == 1 and -2.0 <= a[0] <= 2.0 for a in sampled)
    assert len({a[0] for a in sampled}) > 1  # sampled, not fixed
    assert isinstance(greedy, list) and -2.0 <= greedy[0] <= 2.0
    assert result.updates > 0 and result.env_steps > 0
    assert -2000 < result.eval_mean_return <= 0  # Pendulum's returns are negative, at worst ~-1900 per episode


def test_reward_scale_must_be_positive():
    from asynca3c import ConfigError

    with pytest.raises(ConfigError, match="reward_scale=0 is not allowed: a number > 0"):
        Config(reward_scale=0)


class ShiftedDiscreteEnv(gym.Env):
    """Discrete observations 3..5 (a space that does not start at 0) and Discrete(2) actions."""

    observation_space = gym.spaces.Discrete(3, start=3)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.s = 3
        return self.s, {}

    def step(self, action):
        self.s = 3 + (self.s - 3 + 1 + int(action)) % 3
        return self.s, float(self.s == 5), False, False, {}


gym.register("asynca3c-test/ShiftedDiscrete-v0", entry_point=ShiftedDiscreteEnv, max_episode_steps=10)


def test_discrete_observation_spaces_that_do_not_start_at_zero_are_one_hot():
    spec = inspect_env("asynca3c-test/ShiftedDiscrete-v0")
    np.testing.assert_array_equal(ObsEncoder(spec)(np.array([3, 5])), [[1, 0, 0], [0, 0, 1]])
    cfg = Config(env="asynca3c-test/ShiftedDiscrete-v0", agents=1, envs_per_agent=4, eval_envs=2, hidden=(4,),
                 steps=2_000, seconds=30, final_eval_episodes=2, device="cpu")

    async def main():
        async with Trainer(cfg) as t:
            assert await t.act(4) in (0, 1)
            with pytest.raises(ValueError, match=r"expects an integer in \[3, 6\)"):
                await t.act(0)
            return await t.wait()

    assert asyncio.run(main()).env_steps >= 2_000


def test_normalize_obs_maps_finite_box_bounds_onto_minus_one_to_one():
    model = ActorCritic(3, 2, (4,), obs_bounds=([-1.2, -0.07, -np.inf], [0.6, 0.07, np.inf]))
    torch.testing.assert_close(model.obs_center, torch.tensor([-0.3, 0.0, 0.0]))
    torch.testing.assert_close(model.obs_scale, torch.tensor([2 / 1.8, 2 / 0.14, 1.0]))
    plain = ActorCritic(3, 2, (4,))
    plain.load_state_dict(model.state_dict())  # the mapping travels with the weights (checkpoints, learner)
    obs = torch.tensor([[0.6, -0.07, 5.0]])
    torch.testing.assert_close(plain(obs)[0], model(obs)[0])
    with torch.no_grad():
        first = model.body[0]
        expected = first(torch.tensor([[1.0, -1.0, 5.0]]))
        torch.testing.assert_close(model.body[0]((obs - model.obs_center) * model.obs_scale), expected)

    async def main():
        cfg = Config(env="MountainCar-v0", normalize_obs=True, agents=1, envs_per_agent=4, eval_envs=0,
                     steps=500, seconds=30, final_eval_episodes=1, device="cpu")
        async with Trainer(cfg) as t:
            center = t.model.obs_center.clone()
            await t.wait()
        return center

    torch.testing.assert_close(asyncio.run(main()), torch.tensor([-0.3, 0.0]))


def test_a_six_dimensional_gaussian_matches_torch_and_keeps_its_log_std_in_bounds():
    """HalfCheetah's width: log-density of the unclipped sample and entropy against torch.distributions on
    random inputs, with a log-std pushed far outside [LOG_STD_MIN, LOG_STD_MAX] held at the bounds."""
    from asynca3c.core.model import LOG_STD_MAX, LOG_STD_MIN
    torch.manual_seed(3)
    model = ActorCritic(17, 6, (16,), continuous=True)
    with torch.no_grad():
        model.log_std.copy_(torch.tensor([-40.0, 30.0, -1.0, 0.0, 0.7, -4.9]))
    obs, actions = torch.randn(64, 17), 3 * torch.randn(64, 6)  # many samples outside the box: not clipped
    out, _ = model(obs)
    log_std = out[:, 6:]
    torch.testing.assert_close(log_std[0], torch.tensor([LOG_STD_MIN, LOG_STD_MAX, -1.0, 0.0, 0.7, -4.9]))
    logp, entropy = model.log_prob_entropy(out, actions)
    normal = torch.distributions.Normal(out[:, :6], log_std.exp())
    torch.testing.assert_close(logp, normal.log_prob(actions).sum(-1))
    torch.testing.assert_close(entropy, normal.entropy().sum(-1))
    acts = GaussianActions(np.full(6, -0.4), np.full(6, 0.4))  # Hopper-like bounds
    sampled, _ = acts.choose(model.action_params(out).detach().numpy(), 0.1, np.random.default_rng(0))
    env_actions = acts.to_env(sampled)
    assert np.abs(sampled).max() > 1 and env_actions.min() >= -0.4 and env_actions.max() <= 0.4


class ReachEnv(gym.Env):
    """One step: the observation is a target in [-0.8, 0.8]^2, the reward minus the squared distance of
    the action (in a box [-2, 2]^2) from twice the target. A policy that ignores the target gets at most
    -1.71 on average (the best constant action, 0)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.target = self.np_random.uniform(-0.8, 0.8, 2).astype(np.float32)
        return self.target.copy(), {}

    def step(self, action):
        reward = -float(((np.asarray(action) - 2 * self.target) ** 2).sum())
        return np.zeros(2, np.float32), reward, True, False, {}


gym.register("asynca3c-test/Reach-v0", entry_point=ReachEnv)


def test_a_two_dimensional_continuous_task_is_learned():
    from asynca3c import train
    result = train(Config(env="asynca3c-test/Reach-v0", deterministic=True, agents=1, envs_per_agent=32,
                          eval_envs=0, batch_envs=32, segment_length=8, seconds=0, steps=20_000,
                          final_eval_episodes=100, reward_scale=1.0, hidden=(32,), lr=0.01, log_interval=0.5))
    assert result.eval_mean_return >= -0.1, result.eval_mean_return  # ignoring the target: <= -1.71


def test_a_log_std_pushed_past_its_bound_is_brought_back_after_each_step():
    """Clamped only in the forward pass, a parameter past a bound would get no gradient, and stay."""
    from asynca3c.core.learner import Learner
    from asynca3c.core.messages import Segment
    model = ActorCritic(2, 3, (8,), continuous=True)
    with torch.no_grad():
        model.log_std.copy_(torch.tensor([9.0, -9.0, 0.5]))
    learner = Learner(model, Config(batch_envs=4, minibatches=1, epochs=1), torch.device("cpu"))
    seg = Segment.empty(4, 4, 2, (3,), np.float32)
    seg.valid[:] = True
    learner.learn(seg)
    log_std = learner.model.log_std.detach()
    assert log_std[0] <= 2.0 and log_std[1] >= -5.0 and -5.0 < log_std[2] < 2.0
