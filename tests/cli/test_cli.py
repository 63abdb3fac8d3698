"""The ``asynca3c`` command, run in subprocesses as users run it."""

from __future__ import annotations

import dataclasses
import json

import pytest

from asynca3c.cli import build_parser
from asynca3c.config import Config

SUMMARY_KEYS = {"env", "seed", "seconds", "env_steps", "steps_per_second", "episodes", "updates", "solved",
                "solved_after_seconds", "solved_after_steps", "eval_mean_return", "policy_lag_mean"}


def test_train_smoke_writes_the_run_directory(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    done = run_cli("train", "--env", "CartPole-v1", "--seconds", "2", "--seed", "3", "--run-dir", str(run_dir),
                "--agents", "1", "--envs-per-agent", "16", "--eval-envs", "16", "--final-eval-episodes", "5",
                "--log-interval", "0.5", "--hidden", "8,8", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert "steps/s" in done.stdout and "eval return" in done.stdout  # live progress
    assert "evaluation:" in done.stdout  # the summary
    summary = json.loads((run_dir / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["env"] == "CartPole-v1" and summary["seed"] == 3 and summary["env_steps"] > 0
    assert summary["eval_episodes"] == 5
    config = json.loads((run_dir / "config.json").read_text())
    assert config["hidden"] == [8, 8] and config["envs_per_agent"] == 16
    assert (run_dir / "model.pt").stat().st_size > 0
    rows = (run_dir / "progress.csv").read_text().splitlines()
    assert rows[0].startswith("seconds,env_steps,steps_per_second") and len(rows) >= 3


def test_seed_preset_with_overrides(run_cli, tmp_path):
    done = run_cli("train", "--preset", "seed", "--steps", "3000", "--seconds", "30", "--quiet",
                "--final-eval-episodes", "2", "--eval-envs", "4", "--run-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["agents"] == 8 and config["envs_per_agent"] == 1 and config["optimizers"] == 2
    assert config["epsilon_start"] == [0.4] and config["epsilon_steps"] == 75_000
    assert config["eval_envs"] == 4


def test_help_documents_every_config_field():
    text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for f in dataclasses.fields(Config):
        assert "--" + f.name.replace("_", "-") in text, f.name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lr", "-1"], "lr=-1.0 is not allowed: a number > 0"),
        (["--env", "NoSuchEnv-v0"], "unknown environment id 'NoSuchEnv-v0'"),
        (["--env", "Blackjack-v1"], "supports Box and Discrete"),
        (["--device", "tpu"], "device='tpu' is not allowed"),
        (["--env-kwargs", "[1]"], "expected a JSON object"),
        (["--agents", "two"], "invalid int value: 'two'"),
    ],
)
def test_bad_arguments_give_one_clear_line(assert_one_line_error, run_cli, args, message):
    assert_one_line_error(run_cli("train", *args, timeout=60), message)
