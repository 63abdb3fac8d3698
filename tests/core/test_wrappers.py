"""Named observation wrappers (issue 16's memory task): mask-velocity on every kind of env the package
makes, the same observations as the unwrapped env's kept dimensions, and clear refusals."""

from __future__ import annotations

import asyncio

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from asynca3c import Config, Trainer
from asynca3c.config import ENV_WRAPPERS
from asynca3c.core.envs import _make_single, inspect_env, make_vector_env
from asynca3c.core.evaluation import evaluate
from asynca3c.core.wrappers import KEEP, wrap_vector
from asynca3c.errors import ConfigError, EnvError
from asynca3c.outputs.checkpoint import load_policy_env

KEPT = [0, 2]  # cart position, pole angle


def _sync(n: int) -> gym.vector.VectorEnv:
    return gym.make_vec("CartPole-v1", num_envs=n, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": AutoresetMode.NEXT_STEP})


@pytest.mark.parametrize("kind", ["vector_entry_point", "sync"])
def test_wrapped_vector_envs_see_the_kept_dimensions_through_autoresets(kind):
    if kind == "sync":
        plain, masked = _sync(3), wrap_vector(_sync(3), "mask-velocity", "CartPole-v1")
    else:
        plain, masked = make_vector_env("CartPole-v1", 3), make_vector_env("CartPole-v1", 3, wrapper="mask-velocity")
    assert masked.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert masked.single_observation_space.shape == (2,) and masked.observation_space.shape == (3, 2)
    low, high = plain.single_observation_space.low, plain.single_observation_space.high
    np.testing.assert_array_equal(masked.single_observation_space.low, low[KEPT])
    np.testing.assert_array_equal(masked.single_observation_space.high, high[KEPT])
    try:
        a, _ = plain.reset(seed=5)
        b, _ = masked.reset(seed=5)
        ends = 0
        for _ in range(60):  # always pushing right: episodes end (and autoreset) within ~10 steps
            np.testing.assert_array_equal(b, a[:, KEPT])
            a, _, term, trunc, _ = plain.step(np.ones(3, np.int64))
            b, _, term2, trunc2, _ = masked.step(np.ones(3, np.int64))
            np.testing.assert_array_equal(term | trunc, term2 | trunc2)
            ends += int((term | trunc).sum())
        assert ends >= 3 and b.dtype == np.float32
    finally:
        plain.close()
        masked.close()


def test_a_wrapped_single_env_and_its_spec():
    plain, masked = gym.make("CartPole-v1"), _make_single("CartPole-v1", {}, wrapper="mask-velocity")
    a, _ = plain.reset(seed=3)
    b, _ = masked.reset(seed=3)
    for _ in range(5):
        np.testing.assert_array_equal(b, a[KEPT])
        a, *_ = plain.step(0)
        b, *_ = masked.step(0)
    spec = inspect_env("CartPole-v1", wrapper="mask-velocity")
    assert (spec.obs_dim, spec.n_actions) == (2, 2)
    assert spec.obs_low == pytest.approx((-4.8, -0.41887903)) and spec.obs_high == pytest.approx((4.8, 0.41887903))


def test_evaluation_plays_on_the_wrapped_observations():
    widths = set()

    def policy(obs):
        widths.add(obs.shape[1])
        return np.zeros(len(obs), np.int64)

    result = evaluate(policy, "CartPole-v1", 4, env_wrapper="mask-velocity")
    assert widths == {2} and len(result.returns) == 4


def test_unknown_names_are_refused_naming_the_allowed_ones():
    assert set(KEEP) == set(ENV_WRAPPERS)
    with pytest.raises(ConfigError, match=r"env_wrapper='hide-speed' is not allowed: '' \(none\) or mask-velocity"):
        Config(env_wrapper="hide-speed")
    with pytest.raises(ConfigError, match="hide-speed"):
        make_vector_env("CartPole-v1", 2, wrapper="hide-speed")


@pytest.mark.parametrize("make", [lambda: inspect_env("Acrobot-v1", wrapper="mask-velocity"),
                                  lambda: make_vector_env("Pendulum-v1", 2, wrapper="mask-velocity"),
                                  lambda: inspect_env("FrozenLake-v1", wrapper="mask-velocity")])
def test_an_env_the_wrapper_does_not_fit_is_refused(make):
    with pytest.raises(EnvError, match=r"env_wrapper 'mask-velocity' does not fit '\w+-v1'.* observes"):
        make()


def test_a_run_trains_on_and_saves_its_wrapper(tmp_path):
    cfg = Config(env="CartPole-v1", env_wrapper="mask-velocity", agents=1, envs_per_agent=8, batch_envs=8,
                 hidden=(8,), steps=256, seconds=30, final_eval_episodes=2, device="cpu", learner="thread")

    async def main():
        async with Trainer(cfg, run_dir=tmp_path) as t:
            return await t.wait()

    assert asyncio.run(main()).env_steps >= 256
    model, env_id, _, wrapper = load_policy_env(tmp_path / "model.pt")
    assert (env_id, wrapper) == ("CartPole-v1", "mask-velocity")
    assert len(evaluate(model, env_id, 2, env_wrapper=wrapper).returns) == 2
    with pytest.raises(ConfigError, match="env_factory"):
        Trainer(cfg, env_factory=object)
