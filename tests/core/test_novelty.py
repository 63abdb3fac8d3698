"""The count-based novelty bonus and the training reward the kernel is fed."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from asynca3c import Config, Trainer
from asynca3c.config import ConfigError
from asynca3c.core.envs import inspect_env
from asynca3c.core.rewards import MAX_CELLS, NoveltyBonus, TrainingReward
from asynca3c.outputs import checkpoint


def test_cells_are_the_grid_over_the_box_and_outliers_are_clipped():
    bonus = NoveltyBonus([0.0, 0.0], [1.0, 1.0], bins=4, beta=1.0)
    obs = np.array([[0.0, 0.0], [0.99, 0.0], [0.0, 0.3], [1.0, 1.0], [-5.0, 5.0]])
    assert bonus.cells(obs).tolist() == [0, 3, 4, 15, 12]
    assert bonus.size == 16


def test_bonus_is_beta_over_the_square_root_of_visits():
    bonus = NoveltyBonus([0.0], [1.0], bins=2, beta=0.5)
    np.testing.assert_allclose(bonus(np.array([[0.1]])), [0.5])
    # two visits to one cell in one batch both count before either is paid
    np.testing.assert_allclose(bonus(np.array([[0.2], [0.3], [0.9]])), [0.5 / np.sqrt(3)] * 2 + [0.5])
    np.testing.assert_allclose(bonus(np.array([[0.9]])), [0.5 / np.sqrt(2)])
    assert bonus.counts.tolist() == [3, 2]


def test_discrete_observations_get_one_cell_per_state():
    spec = inspect_env("FrozenLake-v1")
    bonus = NoveltyBonus.for_spec(spec, bins=16, beta=1.0)
    one_hot = np.eye(spec.obs_dim, dtype=np.float32)
    assert len(set(bonus.cells(one_hot).tolist())) == spec.obs_dim


def test_large_grids_are_hashed_into_a_bounded_table():
    dims = 8
    bonus = NoveltyBonus(np.zeros(dims), np.ones(dims), bins=16, beta=1.0)
    assert bonus.size == MAX_CELLS < 16 ** dims
    obs = np.random.default_rng(0).random((10_000, dims))
    cells = bonus.cells(obs)
    assert cells.min() >= 0 and cells.max() < MAX_CELLS
    assert len(np.unique(cells)) > 9_900  # distinct states rarely share a slot


def test_unbounded_observations_are_refused_by_name():
    with pytest.raises(ConfigError, match=r"CartPole-v1's observation dimension\(s\) 1, 3 are unbounded"):
        NoveltyBonus.for_spec(inspect_env("CartPole-v1"), bins=16, beta=0.1)


def test_restoring_counts_of_another_grid_is_refused():
    bonus = NoveltyBonus([0.0], [1.0], bins=4, beta=1.0)
    with pytest.raises(ConfigError, match="novelty_bins changed"):
        bonus.restore(np.zeros(8, dtype=np.int64))


def test_training_reward_scales_then_adds_the_bonus():
    plain = TrainingReward(0.5)
    np.testing.assert_allclose(plain(np.array([-1.0, 2.0]), np.zeros((2, 1))), [-0.5, 1.0])
    shaped = TrainingReward(0.01, NoveltyBonus([0.0], [1.0], bins=2, beta=0.1))
    np.testing.assert_allclose(shaped(np.array([-1.0, -1.0]), np.array([[0.1], [0.9]])), [0.09, 0.09])
    assert shaped(np.array([-1.0]), np.array([[0.1]]))[0] == pytest.approx(-0.01 + 0.1 / np.sqrt(2))


@pytest.mark.parametrize("field, value", [("novelty_bonus", -0.1), ("novelty_bins", 0)])
def test_bad_novelty_settings_are_refused(field, value):
    with pytest.raises(ConfigError, match=f"{field}="):
        Config(**{field: value})


def test_trainer_refuses_the_bonus_on_an_unbounded_env_before_training():
    with pytest.raises(ConfigError, match="unbounded"):
        asyncio.run(Trainer(Config(novelty_bonus=0.1, seconds=5)).run())


def test_counts_are_checkpointed_and_restored_on_resume(tmp_path):
    cfg = Config(env="MountainCar-v0", normalize_obs=True, novelty_bonus=0.1, novelty_bins=8, agents=1,
                 envs_per_agent=4, eval_envs=2, steps=400, seconds=30, final_eval_episodes=1, device="cpu")

    async def first():
        async with Trainer(cfg, run_dir=tmp_path) as t:
            await t.wait()

    asyncio.run(first())
    saved = checkpoint.load(tmp_path)["novelty_counts"].numpy()
    assert saved.shape == (64,) and saved.sum() >= 400  # every step visits a cell
    assert (saved > 0).sum() > 1

    async def resumed():
        async with Trainer(cfg.replace(steps=800), run_dir=tmp_path, resume_from=tmp_path) as t:
            restored = t.novelty_counts()
            await t.wait()
        return restored

    np.testing.assert_array_equal(asyncio.run(resumed()), saved)
    assert checkpoint.load(tmp_path)["novelty_counts"].numpy().sum() > saved.sum()


def test_every_shipped_table_with_a_bonus_fits_its_environment():
    from asynca3c import config_files

    with_bonus = {env_id: table for env_id, table in config_files.shipped_settings().items()
                  if table.get("novelty_bonus")}
    assert "MountainCar-v0" in with_bonus
    for env_id, table in with_bonus.items():
        cfg = config_files.resolve("default", {"env": env_id})
        bonus = NoveltyBonus.for_spec(inspect_env(env_id), cfg.novelty_bins, cfg.novelty_bonus)
        assert bonus.beta == table["novelty_bonus"]
