"""Settings that would crash, hang or exhaust memory are refused in one line before training starts."""

from __future__ import annotations

import pytest

from asynca3c.cli import main

REFUSED = [
    (["--seed", "-1"], "seed=-1 is not allowed: an integer in [0, 4294967295]"),
    (["--n-step", "4611686018427387904"], "n_step=4611686018427387904 is not allowed: an integer in [1, "),
    (["--lr", "1e30"], "lr=1e+30 is not allowed: a number in (0, 1]"),
    (["--lr", "nan"], "lr=nan is not allowed: a number in (0, 1]"),
    (["--value-coef", "inf"], "value_coef=inf is not allowed: a number in [0, 1e6]"),
    (["--entropy-coef", "1e308"], "entropy_coef=1e+308 is not allowed: a number in [0, 1e6]"),
    (["--reward-scale", "1e308"], "reward_scale=1e+308 is not allowed: a number in (0, 1e6]"),
    (["--reward-scale", "inf"], "reward_scale=inf is not allowed: a number in (0, 1e6]"),
    (["--novelty-bonus", "inf"], "novelty_bonus=inf is not allowed: a number in [0, 1e6]"),
    (["--env-kwargs", '{"max_episode_steps": -5}'], "max_episode_steps must be an integer in [1, "),
    (["--env", "phys2d/CartPole-v1"], "'phys2d/CartPole-v1' needs a package that is not installed"),
    (["--env", "tabular/Blackjack-v0"], "'tabular/Blackjack-v0' needs a package that is not installed"),
    (["--envs-per-agent", "10000000"], "envs_per_agent=10000000 is not allowed: an integer in [1, 1000000]"),
    (["--env-faults", "sometimes"], "env_faults='sometimes' is not allowed: auto, fail or restart"),
    (["--agents", "600", "--envs-per-agent", "2000"], "agents x envs_per_agent <= 1000000"),
    (["--torch-threads", "100000"], "torch_threads=100000 is not allowed: an integer in [0, 1024]"),
    (["--reward-threshold", "inf"], "reward_threshold=inf is not allowed: a finite number"),
    (["--env-step-timeout", "nan"], "env_step_timeout=nan is not allowed: a number in [0, 1e9]"),
]


@pytest.mark.parametrize(("args", "message"), REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_dangerous_settings_are_refused_before_training(capsys, tmp_path, args, message):
    run_dir = tmp_path / "r"
    rc: object
    try:
        rc = main(["train", "--quiet", "--seconds", "1", "--final-eval-episodes", "0", "--run-dir", str(run_dir),
                   *args])
    except SystemExit as e:  # argparse refuses with exit status 2 too
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err
    assert not (run_dir / "progress.csv").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["bench", "returns", "--n", "4611686018427387904"], "argument --n: must be an integer in [1, 10,000]"),
    (["bench", "returns", "--vtrace-envs", "100000000"], "argument --vtrace-envs: must be an integer in [1, 65,536]"),
    (["eval", "no-such-run", "--seed", "-1"], "--seed -1 is not allowed: an integer in [0, 2**32 - 1]"),
    (["eval", "no-such-run", "--max-steps", "0"], "--max-steps 0 is not allowed: an integer in [1, 1,000,000,000]"),
])
def test_other_commands_refuse_sizes_that_would_exhaust_memory(capsys, args, message):
    try:
        rc = main(args)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and message in err, err
