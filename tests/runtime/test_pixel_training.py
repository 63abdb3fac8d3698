"""Training from pixels end to end on a task a CNN learns in seconds (tests/pixel_env.py)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shm_segments
from pixel_env import register

from asynca3c import Config, train
from asynca3c.errors import CheckpointError, ConfigError

#: what 20 evaluation episodes of a learned policy score at least: guessing scores 5 of 10, a solved window is
#: >= 9, and a clean-clone CI run once evaluated a solved run at 7.95
LEARNED = 7.5
PIXELS = dict(encoder="a3c", agents=2, envs_per_agent=8, segment_length=8, batch_envs=16, reward_scale=1.0,
              lr=0.001, solve_window=50, final_eval_episodes=20, log_interval=0.5)


@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pixels")
    result = train(Config(env=register(), **PIXELS, seconds=60, until_solved=True), run_dir=run_dir)
    return run_dir, result


def test_a_cnn_learns_which_side_the_square_is_on(pixel_run):
    _, result = pixel_run
    assert result.solved, result  # a window of 50 episodes at >= 9 of 10; guessing scores 5
    assert result.eval_mean_return >= LEARNED, result


def test_the_run_saves_a_cnn_that_eval_rebuilds_and_resume_checks(pixel_run):
    from asynca3c.core.evaluation import evaluate
    from asynca3c.outputs import checkpoint
    run_dir, _ = pixel_run
    model, env_id, _ = checkpoint.load_policy(run_dir / "model.pt")
    assert (model.encoder, model.obs_shape, env_id) == ("a3c", (1, 42, 42), register())
    returns = evaluate(model, env_id, 10, seed=3, deterministic=True).returns
    assert np.mean(returns) >= 8.0, returns
    with pytest.raises(CheckpointError, match="encoder: checkpoint 'a3c', this run 'nature'"):
        train(Config(env=register(), **{**PIXELS, "encoder": "nature"}, seconds=0.5), resume_from=run_dir)
    # a CNN does not use ``hidden``: another value is no reason to refuse; another image shape is
    from asynca3c.core.model import describe_network
    payload = {"network": {**describe_network(model), "env": register()}}
    cfg = Config(env=register(), **PIXELS, hidden=(7,))
    checkpoint.check_matches(payload, register(), 42 * 42, 2, cfg, "a3c", (1, 42, 42))
    with pytest.raises(CheckpointError, match=r"obs_shape: checkpoint \[1, 42, 42\], this run \[1, 21, 84\]"):
        checkpoint.check_matches(payload, register(), 42 * 42, 2, cfg, "a3c", (1, 21, 84))


def test_act_takes_an_image_as_the_env_gives_it(run_on):
    from asynca3c import Trainer

    async def main():
        async with Trainer(Config(env=register(), **{**PIXELS, "final_eval_episodes": 0}, seconds=0)) as trainer:
            frame = np.zeros((42, 42, 1), np.uint8)
            action = await trainer.act(frame)
            with pytest.raises(ValueError, match=r"expects a uint8 image of shape \(42, 42, 1\), as the env"):
                await trainer.act(frame.astype(np.float32))
            with pytest.raises(ValueError, match=r"shape \(1, 42, 42\) and dtype uint8 is not allowed"):
                await trainer.act(frame.reshape(1, 42, 42))  # as many values, channels first: refused
            await trainer.stop()
        return action

    assert run_on(main()) in (0, 1)


def test_a_cnn_over_observations_that_are_not_images_is_refused():
    with pytest.raises(ConfigError, match="encoder='nature' is not allowed for 'CartPole-v1': a CNN needs image"):
        train(Config(env="CartPole-v1", encoder="nature", seconds=0.5))
    with pytest.raises(ConfigError, match="normalize_obs and running_obs_norm are not allowed with encoder='a3c'"):
        train(Config(env=register(), **PIXELS, running_obs_norm=True, seconds=0.5))


@pytest.fixture
def frames_through_shared_memory(monkeypatch):
    """Every segment batch's observations, and every reply's weights, cross between the trainer and the
    learner through shared memory (a real game's batches and a Nature CNN's weights are megabytes; this
    task's are small)."""
    from asynca3c.runtime import learner_client
    monkeypatch.setattr(learner_client, "SHARED_FRAMES_MIN_BYTES", 0)
    monkeypatch.setattr(learner_client, "SHARED_WEIGHTS_MIN_BYTES", 0)


def test_frames_cross_through_shared_memory_and_weights_every_k_updates(frames_through_shared_memory):
    import asyncio

    from asynca3c import Trainer
    before = shm_segments()

    async def main():
        cfg = Config(env=register(), **PIXELS, seconds=60, until_solved=True, weights_every=3)
        trainer = Trainer(cfg)
        result = await trainer.run()
        return result, trainer._run.learner.transport

    result, transport = asyncio.run(main())
    assert result.solved and result.eval_mean_return >= LEARNED, result
    batches = result.updates // 4  # 2 epochs of 2 minibatches: 4 gradient steps per batch
    batch_bytes = 9 * 16 * 42 * 42  # (segment_length + 1) x batch_envs frames of 42x42
    assert batches and transport.frame_bytes == batch_bytes * batches
    assert transport.frame_samples == 8 * 16 * batches and transport.inline_batches == 0
    assert transport.weight_replies == batches // 3  # replies carry weights after every third batch only
    assert transport.pipe_weight_replies == 0  # all of them through a slot, none pickled through the pipe
    assert shm_segments() <= before  # the ring was unlinked


def test_with_no_shared_memory_to_be_had_frames_and_weights_go_by_pipe(frames_through_shared_memory,
                                                                       monkeypatch, caplog):
    """A full or missing /dev/shm (Docker's 64 MB default) costs speed, not the run."""
    import asyncio
    import errno

    from asynca3c import Trainer
    from asynca3c.runtime import shm

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shm, "SlotRing", full)
    monkeypatch.setattr(shm, "_warned_of", set())  # warned once per process

    async def main():
        trainer = Trainer(Config(env=register(), **PIXELS, seconds=60, until_solved=True))
        return await trainer.run(), trainer._run.learner.transport

    result, transport = asyncio.run(main())
    assert result.solved, result
    assert transport.frame_bytes == 0 and transport.weight_replies > 0
    assert transport.pipe_weight_replies == transport.weight_replies
    assert caplog.text.count("no shared-memory segment could be made") == 1


def test_a_killed_learner_leaves_no_shared_memory_and_the_run_goes_on(frames_through_shared_memory):
    import asyncio
    import os
    import signal

    from conftest import until

    from asynca3c import Trainer
    before = shm_segments()

    async def main():
        cfg = Config(env=register(), **{**PIXELS, "final_eval_episodes": 0}, seconds=0)
        async with Trainer(cfg) as trainer:
            assert await until(lambda: trainer.snapshot()["updates"] >= 3)
            assert shm_segments() - before  # the ring exists while training
            first = trainer.learner.pid
            os.kill(first, signal.SIGKILL)
            assert await until(lambda: trainer.learner.pid != first)
            updates = trainer.snapshot()["updates"]
            assert await until(lambda: trainer.snapshot()["updates"] > updates + 3)
            return await trainer.stop()

    result = asyncio.run(main())
    assert result.learner_restarts == 1
    assert shm_segments() <= before


def test_a_video_of_the_pixel_policy_is_recorded(pixel_run, tmp_path):
    from asynca3c.core.envs import inspect_env
    from asynca3c.core.evaluation import model_policy
    from asynca3c.outputs import checkpoint
    from asynca3c.outputs.video import record
    run_dir, _ = pixel_run
    model, env_id, _ = checkpoint.load_policy(run_dir)
    policy = model_policy(model, inspect_env(env_id), True, np.random.default_rng(0))
    path, returns = record(policy, env_id, tmp_path / "play.gif")
    assert path.stat().st_size > 0 and returns[0] >= 8.0
