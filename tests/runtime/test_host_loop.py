"""A trainer embedded in a host's loop does its blocking work elsewhere, at every phase of its life."""

from __future__ import annotations

import asyncio
import subprocess
import threading

import gymnasium as gym

from asynca3c import Config, Trainer
from asynca3c.core import model as model_module
from asynca3c.outputs import checkpoint


def test_blocking_setup_saving_and_evaluation_run_off_the_loop(monkeypatch, tmp_path):
    """Where the work runs does not depend on the loop's kind (bench/bench_host_lag.py times both)."""
    calls: list[tuple[str, bool]] = []  # (what, ran on the loop's thread)

    def spy(name, fn):
        def wrapper(*args, **kwargs):
            calls.append((name, threading.current_thread() is threading.main_thread()))
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(gym, "make", spy("gym.make", gym.make))
    monkeypatch.setattr(gym, "make_vec", spy("gym.make_vec", gym.make_vec))
    original_init = model_module.ActorCritic.__init__
    monkeypatch.setattr(model_module.ActorCritic, "__init__", spy("ActorCritic", original_init))
    monkeypatch.setattr(checkpoint, "save", spy("checkpoint.save", checkpoint.save))
    # uvloop forks the whole trainer on the loop's thread (50-90 ms with torch loaded): the learner's
    # process is started from a thread instead
    monkeypatch.setattr(subprocess, "Popen", spy("subprocess.Popen", subprocess.Popen))

    async def main():
        cfg = Config(agents=1, envs_per_agent=8, batch_envs=8, final_eval_episodes=3, log_interval=0.2)
        trainer = Trainer(cfg, run_dir=tmp_path / "r")  # nothing blocking in the constructor
        assert calls == []
        return await trainer.run(seconds=1)

    result = asyncio.run(main())
    assert result.eval_episodes == 3
    names = {name for name, _ in calls}
    assert {"gym.make", "gym.make_vec", "ActorCritic", "checkpoint.save", "subprocess.Popen"} <= names, names
    on_loop = [name for name, on in calls if on]
    assert on_loop == [], on_loop
