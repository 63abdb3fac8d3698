"""The embedding API: a Trainer on the host's loop (asyncio and uvloop), its lifecycle and errors."""

from __future__ import annotations

import asyncio
import math
import statistics
import threading
import time

import gymnasium as gym
import numpy as np
import pytest
from latency_env import LatencyCartPole

from asynca3c import Config, EnvError, Trainer
from asynca3c.core.learner import Learner
from asynca3c.runtime.trainer import TrainerClosed

SMALL = dict(agents=2, envs_per_agent=16, eval_envs=16, final_eval_episodes=5, log_interval=0.2)
OBS = [0.01, 0.02, -0.01, 0.0]


class FailingEnv(gym.Env):
    """CartPole-shaped; its step raises after ``fail_after`` steps."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, fail_after: int = 200):
        self.fail_after, self.t = fail_after, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(4, np.float32), {}

    def step(self, action):
        self.t += 1
        if self.t > self.fail_after:
            raise RuntimeError("simulator connection lost")
        return np.zeros(4, np.float32), 1.0, self.t % 20 == 0, False, {}


gym.register("asynca3c-test/Failing-v0", entry_point=FailingEnv)
FAILING = dict(env="asynca3c-test/Failing-v0", agents=1, envs_per_agent=2, eval_envs=0, final_eval_episodes=0)


def test_act_metrics_and_graceful_stop(assert_nothing_left, run_on):
    async def main():
        async with Trainer(Config(**SMALL, seconds=0)) as trainer:
            actions = await asyncio.gather(*(trainer.act(OBS) for _ in range(20)))
            greedy = await trainer.act(np.array(OBS), deterministic=True)
            rows = []
            async for row in trainer.metrics():
                rows.append(row)
                if len(rows) == 3:
                    break
            result = await trainer.stop()
            again = await trainer.stop()
            after = await trainer.act(OBS)  # the final policy keeps answering until the block ends
            pid = trainer.learner.pid
        with pytest.raises(TrainerClosed):
            await trainer.act(OBS)
        assert asyncio.all_tasks() == {asyncio.current_task()}
        return actions, greedy, rows, result, again, after, pid

    actions, greedy, rows, result, again, after, pid = run_on(main())
    assert set(actions) <= {0, 1} and greedy in (0, 1) and after in (0, 1)
    assert [r["env_steps"] for r in rows] == sorted(r["env_steps"] for r in rows) and rows[-1]["env_steps"] > 0
    assert {"loop_lag_p99_ms", "loop_lag_max_ms", "queue_depth", "policy_lag_mean"} <= set(rows[-1])
    assert result is again and result.stop_reason == "requested" and result.updates > 0
    assert math.isfinite(result.loop_lag_p99_ms) and result.loop_lag_max_ms >= result.loop_lag_p99_ms > 0
    assert_nothing_left(pid)


def test_two_trainers_one_after_another_with_budgets(assert_nothing_left, run_on):
    async def main():
        first = await Trainer(Config(**SMALL, seed=1)).run(steps=20_000)
        second = await Trainer(Config(**SMALL, seed=2)).run(seconds=1.5)
        return first, second

    first, second = run_on(main())
    assert first.stop_reason == "steps" and first.env_steps >= 20_000
    assert second.stop_reason == "seconds" and 1.5 <= second.seconds < 10
    assert_nothing_left()


def test_env_error_cancels_the_body_and_is_raised_from_the_block(assert_nothing_left, run_on):
    async def main():
        t0 = time.perf_counter()
        trainer = Trainer(Config(**FAILING, seconds=0))
        with pytest.raises(RuntimeError, match="simulator connection lost"):
            async with trainer:
                await asyncio.sleep(60)  # the failure must not wait for this
        elapsed = time.perf_counter() - t0
        with pytest.raises(RuntimeError, match="simulator connection lost"):
            await Trainer(Config(**FAILING, seconds=0)).run()
        assert asyncio.all_tasks() == {asyncio.current_task()}
        return elapsed, trainer.learner.pid

    elapsed, pid = run_on(main())
    assert elapsed < 30
    assert_nothing_left(pid)


def test_env_error_reaches_act_and_metrics(run_on):
    async def main():
        async with Trainer(Config(**FAILING, seconds=0)) as trainer:
            with pytest.raises(RuntimeError, match="simulator connection lost"):
                async for _ in trainer.metrics():
                    pass
            with pytest.raises(RuntimeError, match="simulator connection lost"):
                await trainer.act(OBS)
            with pytest.raises(RuntimeError, match="simulator connection lost"):
                await trainer.stop()

    with pytest.raises(RuntimeError, match="simulator connection lost"):
        run_on(main())


def test_cancel_while_a_minimize_step_is_in_its_executor(assert_nothing_left, run_on, monkeypatch):
    in_step = threading.Event()
    plain_learn = Learner.learn

    def slow_learn(self, batch, lr_factor=1.0):
        in_step.set()
        time.sleep(0.3)
        return plain_learn(self, batch, lr_factor)

    monkeypatch.setattr(Learner, "learn", slow_learn)

    async def main():
        task = asyncio.create_task(Trainer(Config(**SMALL, seconds=0, learner="thread")).run())
        deadline = time.monotonic() + 60
        while not in_step.is_set():  # noqa: ASYNC110 - a threading.Event, set in the executor thread
            assert time.monotonic() < deadline, "no minimize step started within 60 s"
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert asyncio.all_tasks() == {asyncio.current_task()}

    run_on(main())
    assert_nothing_left()


def test_host_heartbeat_stays_responsive_while_training(run_on):
    """A loose sanity bound; the benchmark (bench/bench_host_lag.py) reports the real figures."""

    async def main():
        lags = []

        async def heartbeat():
            while True:
                due = time.perf_counter() + 0.005
                await asyncio.sleep(0.005)
                lags.append((time.perf_counter() - due) * 1000)

        beat = asyncio.create_task(heartbeat())
        result = await Trainer(Config(seconds=3.0, final_eval_episodes=10)).run()
        beat.cancel()
        return lags, result

    lags, result = run_on(main())
    assert len(lags) > 100 and result.env_steps > 0
    p99 = statistics.quantiles(lags, n=100)[98]
    assert p99 < 100, p99  # the target is 5 ms; this only catches a blocked loop
    assert math.isfinite(result.loop_lag_p99_ms)


def test_async_environments_are_driven_natively(run_on):
    async def main():
        cfg = Config(env="LatencyCartPole", agents=1, envs_per_agent=32, eval_envs=8, final_eval_episodes=4)
        return await Trainer(cfg, env_factory=lambda: LatencyCartPole(latency=0.001)).run(steps=6_000)

    result = run_on(main())
    assert result.env_steps >= 6_000 and result.updates > 0 and result.episodes > 0
    assert result.eval_episodes == 4 and result.eval_mean_return >= 8  # CartPole episodes last >= 8 steps
    # 40 envs, each awaiting 1 ms per step: far more steps than one env alone could make in the time
    assert result.env_steps / result.seconds > 1 / 0.001 * 2


def test_a_sync_env_factory_is_refused_with_a_clear_error():
    async def main():
        await Trainer(Config(), env_factory=lambda: gym.make("CartPole-v1")).run()

    with pytest.raises(EnvError, match="reset and step are not coroutines"):
        asyncio.run(main())


def test_bad_observations_for_act_name_the_shape():
    async def main():
        async with Trainer(Config(**SMALL, seconds=0)) as trainer:
            with pytest.raises(ValueError, match=r"shape \(3,\).*expects 4 numbers"):
                await trainer.act([1.0, 2.0, 3.0])
            await trainer.stop()

    asyncio.run(main())


def test_a_trainer_runs_once_and_act_needs_a_start():
    async def main():
        trainer = Trainer(Config(**SMALL, seconds=0))
        with pytest.raises(TrainerClosed, match="not running"):
            await trainer.act(OBS)
        await trainer.run(steps=2_000)
        with pytest.raises(RuntimeError, match="runs once"):
            await trainer.start()

    asyncio.run(main())
