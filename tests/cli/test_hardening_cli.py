"""The command under stress: phases after training are bounded and interruptible, a second Ctrl-C aborts
in one line, run directories are never mixed or half-written, a full disk is one line."""

from __future__ import annotations

import csv
import errno
import json
import os
import signal
import subprocess
import time

import pytest

from asynca3c.cli import main

QUICK = ["--agents", "1", "--envs-per-agent", "8", "--batch-envs", "8", "--log-interval", "0.2", "--quiet"]


def _wait_for(path, proc, seconds=60.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_an_env_without_a_time_limit_still_finishes_its_final_evaluation(run_cli, tmp_path):
    done = run_cli("train", "--env", "CliffWalking-v1", "--seconds", "2", "--final-eval-episodes", "10",
                   "--eval-max-episode-steps", "200", "--run-dir", str(tmp_path / "r"), *QUICK, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["eval_episodes"] == 10 and summary["eval_mean_return"] >= -200 * 100  # cut off at 200 steps


def test_a_signal_after_training_cuts_the_final_evaluation_short(cli_command, tmp_path):
    run_dir = tmp_path / "r"
    proc = subprocess.Popen([*cli_command, "train", "--env", "CliffWalking-v1", "--seconds", "1",
                             "--eval-max-episode-steps", "1000000000", "--run-dir", str(run_dir), *QUICK],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(run_dir / "summary.json", proc)  # written before the evaluation starts
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode == 143 and took < 15, (proc.returncode, took, err)
    assert "Traceback" not in err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stop_reason"] == "seconds" and summary["env_steps"] > 0
    assert (run_dir / "model.pt").stat().st_size > 0


def _train_in_a_terminal(cli_command, run_dir, *extra) -> subprocess.Popen:
    """The command in a process group of its own, as a shell runs it: Ctrl-C goes to the whole group."""
    proc = subprocess.Popen([*cli_command, "train", "--seconds", "60", "--run-dir", str(run_dir), "--agents", "1",
                             "--envs-per-agent", "8", "--batch-envs", "8", "--log-interval", "0.2", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # training has started
        if "steps/s" in line:
            break
    return proc


def test_ctrl_c_in_a_terminal_stops_gracefully_without_killing_the_learner(cli_command, tmp_path):
    proc = _train_in_a_terminal(cli_command, tmp_path / "r", "--final-eval-episodes", "5")
    try:
        os.killpg(proc.pid, signal.SIGINT)  # the learner process is in the group a terminal signals
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["stop_reason"] == "interrupted" and summary["learner_restarts"] == 0
    assert summary["eval_episodes"] == 5


def test_a_second_ctrl_c_aborts_at_once_with_one_line(cli_command, tmp_path):
    proc = _train_in_a_terminal(cli_command, tmp_path / "r")
    try:
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode == 130 and took < 10, (proc.returncode, took, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert lines[-1].startswith("SIGINT again: aborting now"), err
    assert len(lines) == 2, err  # the first signal's line, then the abort's


def _progress_rows(run_dir) -> list[dict]:
    with (run_dir / "progress.csv").open() as f:
        return list(csv.DictReader(f))


def test_the_run_dir_of_another_run_is_refused_unless_resume_or_overwrite(tmp_path, capsys):
    run_dir = tmp_path / "r"
    args = ["train", "--seconds", "1", "--final-eval-episodes", "0", "--run-dir", str(run_dir), *QUICK]
    assert main(args) == 0
    first_rows = len(_progress_rows(run_dir))
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a run" in err[0] and "--overwrite" in err[0], err
    assert len(_progress_rows(run_dir)) == first_rows  # untouched
    assert main([*args, "--overwrite"]) == 0
    rows = _progress_rows(run_dir)
    seconds = [float(r["seconds"]) for r in rows]
    assert seconds == sorted(seconds) and seconds[0] < 0.5  # the new run's rows only


@pytest.mark.parametrize("kind", ["file", "under a file"])
def test_a_run_dir_that_cannot_be_one_is_refused_before_training(tmp_path, capsys, kind):
    blocker = tmp_path / "f"
    blocker.write_text("not a directory")
    run_dir = blocker if kind == "file" else blocker / "r"
    assert main(["train", "--seconds", "1", "--run-dir", str(run_dir), *QUICK]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"is {'a file' if kind == 'file' else 'under a file'}" in err[0], err


def test_a_full_disk_is_one_line_exit_1_and_nothing_half_written(tmp_path, capsys, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    run_dir = tmp_path / "r"
    rc = main(["train", "--seconds", "1", "--final-eval-episodes", "0", "--run-dir", str(run_dir), *QUICK])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "No space left on device" in err[0] and "checkpoint.pt" in err[0], err
    assert "Traceback" not in "\n".join(err)
    leftovers = [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp") or p.suffix == ".pt"]
    assert leftovers == []
