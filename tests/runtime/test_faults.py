"""Environment faults, a learner that dies, non-finite numbers: each is survived or stops the run with one
clear error, and nothing waits forever."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from asynca3c import Config, EnvFault, LearnerError, Trainer, train
from asynca3c.cli import main
from asynca3c.outputs import checkpoint
from asynca3c.runtime import async_agents

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from conftest import until  # noqa: E402
from latency_env import LatencyCartPole  # noqa: E402


class BrokenCartPole(gym.Env):
    """CartPole-shaped; every ``every``-th step (counted over all instances) goes wrong as ``how`` says."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)
    calls = 0

    def __init__(self, how: str = "nan", every: int = 300):
        self.how, self.every, self.t = how, every, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(4, np.float32), {}

    def step(self, action):
        self.t += 1
        BrokenCartPole.calls += 1
        obs, reward = np.full(4, 0.1, np.float32), 1.0
        if BrokenCartPole.calls % self.every == 0:
            if self.how == "raise":
                raise ConnectionError("simulator went away")
            if self.how == "nan":
                obs[2] = np.nan
            if self.how == "shape":
                obs = np.zeros(3, np.float32)
            if self.how == "reward":
                reward = math.inf
        return obs, reward, self.t >= 20, False, {}


gym.register("asynca3c-test/Broken-v0", entry_point=BrokenCartPole)
SMALL = dict(env="asynca3c-test/Broken-v0", agents=1, envs_per_agent=4, batch_envs=4, final_eval_episodes=0,
             log_interval=0.2)


@pytest.mark.parametrize(("how", "what"), [("nan", "non-finite observation (nan"),
                                            ("raise", "ConnectionError: simulator went away"),
                                            ("reward", "non-finite reward (inf)")])
def test_a_gym_env_fault_fails_the_run_by_default_naming_env_fault_and_step(how, what):
    cfg = Config(**SMALL, env_kwargs={"how": how, "every": 50}, seconds=20)
    with pytest.raises(EnvFault, match=r"agent 0 \(4 x asynca3c-test/Broken-v0\) at step [\d,]+: ") as caught:
        train(cfg)
    assert what in str(caught.value)


def test_wrongly_shaped_observations_are_a_fault_too():
    # gymnasium's vector env cannot even stack a short row: its error is the fault
    cfg = Config(**SMALL, env_kwargs={"how": "shape", "every": 50}, seconds=20)
    with pytest.raises(EnvFault, match="environment fault in agent 0"):
        train(cfg)


@pytest.mark.parametrize("how", ["nan", "raise", "shape"])
def test_restart_replaces_the_vector_counts_the_fault_and_training_goes_on(how):
    cfg = Config(**SMALL, env_kwargs={"how": how, "every": 700}, env_faults="restart", seconds=1.5)
    rows = []
    result = Trainer(cfg, on_progress=rows.append)
    result = asyncio.run(result.run())
    assert result.env_faults >= 1 and result.updates > 0 and result.env_steps > 1_000
    assert rows[-1]["env_faults"] == result.env_faults


def test_faults_faster_than_the_limit_stop_a_restarting_run():
    cfg = Config(**SMALL, env_kwargs={"how": "nan", "every": 7}, env_faults="restart", max_env_faults_per_minute=5,
                 seconds=20)
    with pytest.raises(EnvFault, match="6 environment faults within 60 s .*max_env_faults_per_minute=5"):
        train(cfg)


class FaultyAsync(LatencyCartPole):
    """Async CartPole whose ``step`` goes wrong once, after ``after`` steps, as ``how`` says."""

    made = 0

    def __init__(self, how: str, after: int = 30):
        super().__init__(latency=0.0005)
        FaultyAsync.made += 1
        self.how, self.after, self.steps = how, after, 0

    async def step(self, action):
        self.steps += 1
        if self.steps == self.after:
            if self.how == "hang":
                await asyncio.Event().wait()  # never answers
            if self.how == "raise":
                raise TimeoutError("upstream gateway timeout")
            obs, r, te, tr, info = await super().step(action)
            return (np.full(4, np.nan) if self.how == "nan" else np.zeros(7)), r, te, tr, info
        return await super().step(action)


ASYNC = dict(env="FaultyAsync", agents=1, envs_per_agent=4, batch_envs=4, final_eval_episodes=0, log_interval=0.2,
             env_step_timeout=0.3)


@pytest.mark.parametrize("how", ["hang", "raise", "nan", "shape"])
def test_async_env_faults_are_restarted_by_default(how):
    made = []

    def factory():
        made.append(FaultyAsync(how, after=30 + 40 * len(made)))
        return made[-1]

    async def main_():
        return await Trainer(Config(**ASYNC), env_factory=factory).run(seconds=1.5)

    t0 = time.perf_counter()
    result = asyncio.run(main_())
    assert time.perf_counter() - t0 < 15
    assert result.env_faults >= 1 and result.env_steps > 500
    assert len(made) >= 1 + 4 + result.env_faults  # the probe, the four, one replacement per fault


def test_a_restarted_async_env_drops_its_open_n_step_window(run_on):  # on asyncio and uvloop
    made = []

    def factory():
        made.append(FaultyAsync("nan", after=25 + 40 * len(made)))
        return made[-1]

    async def main_():
        cfg = Config(**ASYNC, algorithm="nstep", eval_envs=0, epsilon_end=(0.0,))
        return await Trainer(cfg, env_factory=factory).run(seconds=1.5)

    result = run_on(main_())
    assert result.env_faults >= 1 and result.updates > 0


def test_the_kernel_forgets_a_dropped_window():
    from asynca3c.core.returns import NStepKernel

    k = NStepKernel(2, 3, 0.5)
    k.push_one(0, 1.0)
    k.push_one(0, 1.0)
    k.push_one(1, 4.0)
    k.drop(0)
    assert k.pending.tolist() == [0, 1]
    assert k.push_one(0, 2.0, True) == 1 and k.returns[0] == 2.0  # only the step after the drop
    with pytest.raises(IndexError, match=r"env must be in \[0, 2\), got 2"):
        k.drop(2)


def test_an_async_env_fault_with_fail_raises_one_env_fault_not_a_group(run_on):
    async def main_():
        return await Trainer(Config(**ASYNC, env_faults="fail"), env_factory=lambda: FaultyAsync("nan")).run(seconds=20)

    with pytest.raises(EnvFault, match=r"agent 0, async env \d \(FaultyAsync\) at step [\d,]+: a non-finite"):
        run_on(main_())


def test_a_step_that_never_returns_does_not_keep_the_run_alive(monkeypatch):
    """No step timeout at all: the stop still ends, cancelling the hung step after a short grace."""
    monkeypatch.setattr(async_agents, "STOP_GRACE", 0.5)

    async def main_():
        cfg = Config(**{**ASYNC, "env_step_timeout": 0.0})
        return await Trainer(cfg, env_factory=lambda: FaultyAsync("hang", after=5)).run(seconds=1)

    t0 = time.perf_counter()
    result = asyncio.run(main_())
    assert time.perf_counter() - t0 < 10 and result.stop_reason == "seconds"


class HugeRewardEnv(BrokenCartPole):
    def step(self, action):
        obs, _, te, tr, info = super().step(action)
        return obs, 1e30, te, tr, info  # finite in float32, but its square is not


gym.register("asynca3c-test/HugeReward-v0", entry_point=HugeRewardEnv, kwargs={"every": 10**9})


def test_rewards_beyond_float32_are_an_env_fault():
    class Enormous(BrokenCartPole):
        def step(self, action):
            obs, _, te, tr, info = super().step(action)
            return obs, 1e300, te, tr, info

    gym.register("asynca3c-test/Enormous-v0", entry_point=Enormous, kwargs={"every": 10**9})
    with pytest.raises(EnvFault, match=r"at step 0: a float32-overflowing reward \(1e\+300\)"):
        train(Config(**{**SMALL, "env": "asynca3c-test/Enormous-v0"}, seconds=20))


def test_finite_rewards_too_large_to_learn_from_stop_at_the_learners_guard(tmp_path, capsys):
    rc = main(["train", "--env", "asynca3c-test/HugeReward-v0", "--seconds", "20", "--max-nonfinite-steps", "3",
               "--final-eval-episodes", "0", "--run-dir", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "non-finite losses or gradients in a row" in err[0], err
    weights = checkpoint.load(tmp_path / "r")["model"]  # the last good weights were kept and saved
    assert all(bool(w.isfinite().all()) for w in weights.values())


def test_non_finite_action_parameters_are_a_learner_fault():
    async def main_():
        async with Trainer(Config(env="CartPole-v1", seconds=0, final_eval_episodes=0)) as trainer:
            model = trainer.model
            with __import__("torch").no_grad():
                model.policy.weight.fill_(math.inf)
            with pytest.raises(LearnerError, match="non-finite action parameters"):
                await trainer.act([0.0, 0.0, 0.0, 0.0])

    with pytest.raises(LearnerError, match="non-finite action parameters"):
        asyncio.run(main_())


def test_a_killed_learner_is_restarted_and_counted(tmp_path):
    async def main_():
        cfg = Config(seconds=0, final_eval_episodes=0, log_interval=0.2)
        async with Trainer(cfg, run_dir=tmp_path / "r") as trainer:
            await asyncio.sleep(0.5)
            first = trainer.learner.pid
            os.kill(first, signal.SIGKILL)
            assert await until(lambda: trainer.learner.pid != first)  # a new worker started
            updates = trainer.snapshot()["updates"]
            assert await until(lambda: trainer.snapshot()["updates"] > updates)  # and it trains
            return await trainer.stop()

    result = asyncio.run(main_())
    assert result.learner_restarts == 1
    assert checkpoint.load(tmp_path / "r")["counters"]["learner_restarts"] == 1


def test_a_learner_that_keeps_dying_stops_the_run_with_one_line_and_a_loadable_checkpoint(tmp_path):
    async def main_():
        cfg = Config(seconds=0, final_eval_episodes=0, max_learner_restarts=2, log_interval=0.2)
        async with Trainer(cfg, run_dir=tmp_path / "r") as trainer:
            killed: set[int] = set()
            for _ in range(3):
                assert await until(lambda: trainer.learner.pid not in killed)  # the restart has a new worker
                await asyncio.sleep(0.3)
                killed.add(trainer.learner.pid)
                os.kill(trainer.learner.pid, signal.SIGKILL)
            await asyncio.sleep(30)

    with pytest.raises(LearnerError) as caught:
        asyncio.run(main_())
    assert "the learner process died (signal 9, SIGKILL) 3 times within 10 minutes" in str(caught.value)
    assert any("is saved in" in n for n in caught.value.__notes__)
    state = checkpoint.load(tmp_path / "r")
    assert state["version"] >= 0 and state["counters"]["learner_restarts"] == 2


class NeverResets(LatencyCartPole):
    async def reset(self, *, seed=None, options=None):
        raise ConnectionRefusedError("no simulator listening")


def test_an_env_that_never_resets_ends_in_the_fault_limit_not_a_recursion_error():
    async def main_():
        cfg = Config(**ASYNC, max_env_faults_per_minute=1_100)  # more replacements than Python's recursion limit
        return await Trainer(cfg, env_factory=NeverResets).run(seconds=20)

    with pytest.raises(EnvFault, match=r"1101 environment faults within 60 s .*ConnectionRefusedError"):
        asyncio.run(main_())


def test_a_stop_asked_while_the_run_drains_cuts_the_evaluation_short():
    from asynca3c.runtime.run import StopRequest

    async def main_():
        stop = StopRequest()
        stop("seconds")
        stop("terminated")  # during the drain: remembered
        assert not stop.cut_short.is_set()
        stop.end_training()
        assert stop.cut_short.is_set() and stop.reason == "seconds"
        quiet = StopRequest()
        quiet("seconds")
        quiet.end_training()
        assert not quiet.cut_short.is_set()
        quiet("interrupted")  # after training: at once
        assert quiet.cut_short.is_set()
        budget = StopRequest()
        for _ in range(3):  # the monitor sees its budget spent at every tick until it stops
            budget.reached("seconds")
        budget.end_training()
        assert not budget.cut_short.is_set()

    asyncio.run(main_())


def test_a_stopped_evaluation_keeps_the_episodes_that_ended():
    from asynca3c.core.evaluation import play

    returns: list[float] = []
    steps = play(lambda obs: np.zeros(len(obs), np.int64), "CartPole-v1", 8, None, 0, False, 128, returns)
    for _ in range(9):  # always pushing left, these 8 episodes last 8 to 10 steps
        next(steps)
    assert returns == []  # nothing is appended while the chunk plays
    steps.close()
    assert 1 <= len(returns) < 8 and all(r in (8.0, 9.0) for r in returns)


class _Policy:
    """What evaluate_async_envs needs of the predictor: an action for a row; can be made to fail."""

    def __init__(self, fail: bool = False):
        from asynca3c.core.actions import DiscreteActions

        self.actions, self.fail = DiscreteActions(2), fail

    async def choose(self, obs, eps, state=None):
        if self.fail:
            raise LearnerError("the network gave non-finite action parameters")
        return 0, 0.0, 0, None


def test_evaluation_faults_are_counted_once_per_episode_and_policy_errors_are_raised():
    from asynca3c.core.envs import ObsEncoder, describe_env
    from asynca3c.runtime.async_agents import evaluate_async_envs

    made = []

    def factory():
        made.append(FaultyAsync("nan", after=3 if len(made) % 2 else 10**9))
        return made[-1]

    encoder = ObsEncoder(describe_env(LatencyCartPole(), "FaultyAsync"))
    faults: list[str] = []
    returns: list[float] = []
    asyncio.run(evaluate_async_envs(factory, _Policy(), encoder, 6, 0, returns, on_fault=faults.append))
    assert len(faults) == 3 and len(returns) == 3 and all("a non-finite observation" in f for f in faults)
    with pytest.raises(LearnerError, match="non-finite action parameters"):
        asyncio.run(evaluate_async_envs(factory, _Policy(fail=True), encoder, 4, 0, [], on_fault=faults.append))
    assert len(faults) == 3


class RaisesOnStep(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        raise RuntimeError("the simulator crashed")


gym.register("asynca3c-test/RaisesOnStep-v0", entry_point=RaisesOnStep)


def test_a_cancel_while_a_faulted_vector_is_rebuilt_waits_for_it_and_closes_it(run_on):
    """The replacement is made in a thread that cannot be stopped: the cancel waits for it and closes what
    it made, rather than leaving a vector (an emulator's threads) behind unclosed."""
    from asynca3c.core.actions import for_spec as actions_for
    from asynca3c.core.envs import ObsEncoder, inspect_env, make_vector_env
    from asynca3c.runtime.agent import Agent, EpsilonSchedule
    from asynca3c.runtime.faults import FaultPolicy
    from asynca3c.runtime.progress import Progress

    env_id = "asynca3c-test/RaisesOnStep-v0"
    entered, release, made = threading.Event(), threading.Event(), []

    def make_envs():
        entered.set()
        release.wait(10)
        made.append(make_vector_env(env_id, 2))
        return made[-1]

    class Uniform:
        async def infer(self, obs):
            return np.full((len(obs), 2), 0.5, np.float32), 0

    async def main():
        spec = inspect_env(env_id)
        progress = Progress(10, None)
        agent = Agent(envs=make_vector_env(env_id, 2), make_envs=make_envs, encoder=ObsEncoder(spec),
                      policy=Uniform(), actions=actions_for(spec), queue=asyncio.Queue(), n_step=2, gamma=0.9,
                      epsilon=EpsilonSchedule(0.0, 0.0, 0), progress=progress, seed=0,
                      faults=FaultPolicy(True, 100, progress))
        task = asyncio.create_task(agent.run())
        assert await until(entered.is_set, 10)
        task.cancel()
        await asyncio.sleep(0.1)
        waited = not task.done()  # the cancel waits for the thread that makes the replacement
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        return waited, progress.env_faults

    waited, faults = run_on(main())
    assert waited and faults == 1
    assert len(made) == 1 and made[0].closed
