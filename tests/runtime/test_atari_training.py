"""A short Pong run with the shipped settings: it starts, trains, and writes a run directory that eval rebuilds.
Skipped, with the reason, where ale-py is not installed (the test command installs it)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("ale_py", reason="ale-py is not installed: pip install 'asynca3c[atari]'")


@pytest.fixture(scope="module")
def pong_run(tmp_path_factory):
    from asynca3c.config_files import resolve
    from asynca3c.runtime.trainer import train
    run_dir = tmp_path_factory.mktemp("pong") / "run"
    cfg = resolve("default", {"env": "ALE/Pong-v5", "seconds": 20, "final_eval_episodes": 0, "log_interval": 2})
    return run_dir, train(cfg, run_dir=run_dir)


def test_pong_trains_for_twenty_seconds_from_uint8_frames(pong_run):
    _, result = pong_run
    assert result.env_steps >= 1_000 and result.updates >= 5, result
    assert result.config["encoder"] == "a3c" and result.config["reward_clip"] == 1.0  # the shipped table
    assert result.stop_reason == "seconds" and result.env_faults == 0


def test_the_pong_run_directory_rebuilds_the_tables_cnn(pong_run, run_cli):
    from asynca3c.outputs import checkpoint
    run_dir, _ = pong_run
    model, env_id, _ = checkpoint.load_policy(run_dir)
    assert (env_id, model.encoder, model.obs_shape, model.n_actions) == ("ALE/Pong-v5", "a3c", (4, 84, 84), 6)
    assert json.loads((run_dir / "config.json").read_text())["segment_length"] == 5
    done = run_cli("eval", str(run_dir), "--episodes", "1", "--max-steps", "300")
    assert done.returncode == 0, done.stderr
    assert "mean" in done.stdout.lower()


def test_check_env_accepts_atari_and_names_the_cnn(run_cli):
    done = run_cli("check-env", "ALE/Pong-v5", "--skip-render-check")
    assert "supported: observation Box(0, 255, (4, 84, 84), uint8)" in done.stdout, done.stdout
    assert "through a CNN" in done.stdout
