"""``asynca3c eval`` (statistics and video), ``asynca3c.evaluate``, and the run's CSV and TensorBoard logs."""

from __future__ import annotations

import csv
import re

import pytest

from asynca3c import Config, evaluate
from asynca3c.outputs.checkpoint import load_policy
from asynca3c.outputs.tensorboard import HPARAMS_TAG, TAGS
from asynca3c.runtime.trainer import train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    train(Config(env="CartPole-v1", agents=1, envs_per_agent=32, eval_envs=16, hidden=(16,), seconds=3.0,
                 epsilon_start=(0.1,), final_eval_episodes=5, log_interval=0.5, device="cpu", tensorboard=True),
          run_dir=d)  # epsilon at first, so episodes of both kinds (explored and judged) are logged
    return d


def test_eval_prints_statistics_of_fresh_episodes(run_cli, run_dir):
    done = run_cli("eval", str(run_dir), "--episodes", "20", "--seed", "4")
    assert done.returncode == 0, done.stderr
    m = re.search(r"CartPole-v1: mean ([\d.]+), std ([\d.]+), min ([\d.]+), max ([\d.]+) over 20 episodes",
                  done.stdout)
    assert m, done.stdout
    mean, std, low, high = map(float, m.groups())
    assert 8 <= low <= mean <= high <= 500 and std >= 0
    model, env_id, env_kwargs = load_policy(run_dir)  # the same numbers from Python
    same = evaluate(model, env_id, 20, env_kwargs=env_kwargs, seed=4).stats()
    assert same["mean"] == pytest.approx(mean, abs=0.01) and same["max"] == pytest.approx(high)


def test_eval_reads_model_pt_and_plays_the_same_policy_as_the_checkpoint(run_cli, run_dir):
    """model.pt holds the final weights (the checkpoint's) and what rebuilds the network."""
    outputs = []
    for source in (run_dir / "model.pt", run_dir):
        done = run_cli("eval", str(source), "--episodes", "10", "--seed", "2", "--deterministic")
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1] and "over 10 episodes" in outputs[0]
    model, env_id, env_kwargs = load_policy(run_dir / "model.pt")
    twin, _, _ = load_policy(run_dir)
    assert env_id == "CartPole-v1" and env_kwargs == {}
    for name, tensor in model.state_dict().items():
        assert tensor.equal(twin.state_dict()[name]), name


def test_a_model_file_does_not_resume_a_run(run_dir):
    from asynca3c.errors import CheckpointError
    from asynca3c.outputs import checkpoint

    with pytest.raises(CheckpointError, match="is not an asynca3c checkpoint"):
        checkpoint.load(run_dir / "model.pt")


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_eval_records_a_playable_video(run_cli, run_dir, tmp_path, suffix):
    imageio = pytest.importorskip("imageio.v2")
    video = tmp_path / f"agent{suffix}"
    done = run_cli("eval", str(run_dir), "--episodes", "1", "--deterministic", "--video", str(video))
    assert done.returncode == 0, done.stderr
    ret = float(re.search(r"returns ([\d.]+)", done.stdout).group(1))
    with imageio.get_reader(video) as reader:
        count = reader.count_frames() if suffix == ".mp4" else reader.get_length()
        first = reader.get_data(0)
    assert first.ndim == 3 and first.shape[2] in (3, 4)
    assert count >= min(ret, 50)  # one frame per step (a GIF may merge identical frames)
    assert first.std() > 0  # a picture, not a blank


def test_eval_errors_are_one_line(assert_one_line_error, run_cli, run_dir, tmp_path):
    for args, message in [([str(tmp_path)], "no checkpoint at"),
                          ([str(run_dir), "--video", str(tmp_path / "a.avi")], "must end in .mp4 or .gif"),
                          ([str(run_dir), "--episodes", "0"], "--episodes 0 is not allowed")]:
        assert_one_line_error(run_cli("eval", *args, timeout=60), message)


def test_progress_csv_and_tensorboard_hold_the_tags(run_dir):
    with (run_dir / "progress.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 4
    assert set(TAGS.values()) <= set(rows[0])  # every TensorBoard tag comes from a CSV column
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = ea.EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert set(TAGS) <= scalars, set(TAGS) - scalars
    returns = acc.Scalars("rollout/episodic_return")
    assert len(returns) >= 3 and all(e.step > 0 for e in returns)
    assert any(HPARAMS_TAG in t for t in acc.Tags()["tensors"])  # the hyperparameters as text


def test_tensorboard_needs_a_run_directory():
    import asyncio

    from asynca3c import ConfigError, Trainer

    async def main():
        async with Trainer(Config(tensorboard=True, seconds=1)):
            pass

    with pytest.raises(ConfigError, match="tensorboard=True needs a run directory"):
        asyncio.run(main())
