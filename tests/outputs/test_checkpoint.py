"""Checkpoints: save, safe load, resume continuing counters and returns, clear errors, signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time

import pytest
import torch

from asynca3c import Config, Trainer
from asynca3c.outputs import checkpoint
from asynca3c.outputs.checkpoint import CheckpointError
from asynca3c.runtime.uvloop_runner import run_on_uvloop

SMALL = dict(env="CartPole-v1", agents=1, envs_per_agent=16, eval_envs=8, hidden=(8,), final_eval_episodes=2,
             log_interval=0.25, device="cpu", seed=5)


def _train(run_dir, **changes):
    cfg = Config(**{**SMALL, **changes})
    return run_on_uvloop(Trainer(cfg, run_dir=run_dir).run())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short run with periodic checkpoints; its directory and result."""
    run_dir = tmp_path_factory.mktemp("run")
    result = _train(run_dir, seconds=2.0, save_every=0.5)
    return run_dir, result


def test_a_run_leaves_a_complete_checkpoint(trained):
    run_dir, result = trained
    saved = checkpoint.load(run_dir)
    assert saved["counters"]["env_steps"] == result.env_steps and saved["counters"]["updates"] == result.updates
    assert saved["version"] == result.updates  # one policy version per minimize step
    assert saved["config"]["hidden"] == [8] and saved["network"]["obs_dim"] == 4
    assert saved["optimizer"]["state"], "the optimizer's running averages are kept"
    assert {"asynca3c", "torch", "gymnasium", "numpy", "python"} <= set(saved["libraries"])
    assert {"torch", "predictor", "agents"} <= set(saved["rng"])
    assert saved["counters"]["eval_returns"], "the solve window's returns are kept"
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_resume_continues_weights_counters_and_returns(trained, tmp_path):
    run_dir, _ = trained
    saved = checkpoint.load(run_dir)
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    (resumed_dir / "checkpoint.pt").write_bytes((run_dir / "checkpoint.pt").read_bytes())
    before = saved["counters"]
    cfg = Config.from_dict(saved["config"]).replace(seconds=before["seconds"] + 1.0)

    async def main():
        async with Trainer(cfg, run_dir=resumed_dir, resume_from=resumed_dir) as t:
            first = t.snapshot()
            for name, tensor in t.model.state_dict().items():  # before any update lands
                assert torch.equal(tensor, saved["model"][name]), name
            result = await t.wait()
        return first, result

    first, result = run_on_uvloop(main())
    assert first["env_steps"] == before["env_steps"] and first["updates"] == before["updates"]
    assert first["seconds"] >= before["seconds"]
    assert first["eval_return_mean"] == pytest.approx(sum(before["eval_returns"]) / len(before["eval_returns"]))
    assert result.env_steps > before["env_steps"] and result.updates > before["updates"]
    assert result.episodes > before["episodes"]
    assert before["seconds"] + 0.5 < result.seconds < before["seconds"] + 5  # the budget counts the whole run
    after = checkpoint.load(resumed_dir)
    assert after["version"] == result.updates and after["counters"]["env_steps"] == result.env_steps


def test_truncated_checkpoint_gives_a_clear_error(assert_one_line_error, run_cli, trained, tmp_path):
    data = (trained[0] / "checkpoint.pt").read_bytes()
    cut = tmp_path / "checkpoint.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        checkpoint.load(tmp_path)
    assert_one_line_error(run_cli("train", "--resume", str(tmp_path), timeout=60), "not a readable checkpoint")


def test_mismatched_checkpoint_names_what_differs(trained):
    run_dir, _ = trained
    with pytest.raises(CheckpointError, match=r"hidden: checkpoint \[8\], this run \[32\]"):
        asyncio.run(Trainer(Config(**{**SMALL, "hidden": (32,)}), resume_from=run_dir).run())
    with pytest.raises(CheckpointError, match="env: checkpoint 'CartPole-v1', this run 'Acrobot-v1'"):
        asyncio.run(Trainer(Config(**{**SMALL, "env": "Acrobot-v1"}), resume_from=run_dir).run())
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        checkpoint.load(run_dir / "nothing-here")


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo unpickled",))


def test_loading_never_unpickles_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "format_version": checkpoint.FORMAT_VERSION, "x": _Payload()}, path)
    with pytest.raises(CheckpointError, match="refused: it holds Python code"):
        checkpoint.load(path)


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    checkpoint.save(path, {"counters": {"env_steps": 1}})

    def crash(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, {"counters": {"env_steps": 2}})
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["counters"]["env_steps"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_sigterm_saves_a_loadable_checkpoint_and_exits_143_then_resume_continues(cli_command, run_cli, tmp_path):
    run_dir = tmp_path / "run"
    args = ["--env", "CartPole-v1", "--agents", "1", "--envs-per-agent", "16", "--eval-envs", "8", "--hidden", "8",
            "--final-eval-episodes", "2", "--log-interval", "0.2", "--save-every", "0", "--device", "cpu"]
    proc = subprocess.Popen([*cli_command, "train", "--seconds", "60", "--run-dir",
                             str(run_dir), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # wait until it trains
            if "steps/s" in line and "updates" in line and " 0  eval" not in line:
                break
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "SIGTERM: stopping" in err
    saved = checkpoint.load(run_dir)
    assert saved["counters"]["env_steps"] > 0 and saved["counters"]["seconds"] < 60
    assert json.loads((run_dir / "summary.json").read_text())["stop_reason"] == "terminated"

    total = saved["counters"]["seconds"] + 1.0
    done = run_cli("train", "--resume", str(run_dir), "--seconds", str(total), "--quiet")
    assert done.returncode == 0, done.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] > saved["counters"]["env_steps"] and summary["seconds"] >= total
