"""Tests of the trainer: learning, bootstrapping, clean cancellation, clear errors."""

from __future__ import annotations

import asyncio
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from asynca3c import Config, EnvError, Trainer, train
from asynca3c.config import preset
from asynca3c.core.actions import for_spec as actions_for
from asynca3c.core.envs import ObsEncoder, inspect_env, make_vector_env
from asynca3c.core.learner import Learner
from asynca3c.core.messages import SampleBatch
from asynca3c.core.model import ActorCritic
from asynca3c.runtime.agent import Agent, EpsilonSchedule
from asynca3c.runtime.progress import Progress

#: Small and quick: a few seconds on 2 cores.
SMALL = dict(agents=2, envs_per_agent=16, eval_envs=16, final_eval_episodes=10, log_interval=0.25)


class ChainEnv(gym.Env):
    """Observation t (the step index), reward t + 1; ends after 3 steps.

    ``terminal=True``: the third step terminates. Otherwise it is registered
    with ``max_episode_steps=3``, so the TimeLimit wrapper truncates it.
    """

    observation_space = gym.spaces.Box(0.0, 10.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, terminal: bool = False):
        self.terminal = terminal
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t], np.float32), float(self.t), self.terminal and self.t == 3, False, {}


gym.register("asynca3c-test/Chain-v0", entry_point=ChainEnv, max_episode_steps=3)


class OddActionsEnv(ChainEnv):
    """ChainEnv with an action space asynca3c cannot train on."""

    SPACES = {"unbounded": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
              "matrix": gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32),
              "multidiscrete": gym.spaces.MultiDiscrete([2, 3])}

    def __init__(self, kind: str):
        super().__init__()
        self.action_space = self.SPACES[kind]


gym.register("asynca3c-test/OddActions-v0", entry_point=OddActionsEnv, max_episode_steps=3)


class FixedPolicy:
    """Uniform action probabilities; stops the agent after ``calls`` requests."""

    def __init__(self, agent_box: list, calls: int):
        self.agent_box, self.calls = agent_box, calls

    async def infer(self, obs):
        self.calls -= 1
        if self.calls == 0:
            self.agent_box[0].stop()
        return np.full((len(obs), 2), 0.5, np.float32), 0


def _agent_samples(terminal: bool, n: int, gamma: float) -> set[tuple]:
    """Every distinct (obs, return, discount, boot_obs) the agent sends for ChainEnv."""
    kwargs = {"terminal": terminal}
    spec = inspect_env("asynca3c-test/Chain-v0", kwargs)
    box: list = []
    queue: asyncio.Queue = asyncio.Queue()
    agent = Agent(envs=make_vector_env("asynca3c-test/Chain-v0", 2, kwargs), encoder=ObsEncoder(spec),
                  policy=FixedPolicy(box, calls=12), actions=actions_for(spec), queue=queue, n_step=n, gamma=gamma,
                  epsilon=EpsilonSchedule(0.0, 0.0, 0), progress=Progress(100, None), seed=0)
    box.append(agent)
    asyncio.run(agent.run())
    out = set()
    while not queue.empty():
        b: SampleBatch = queue.get_nowait()
        for i in range(len(b)):
            out.add((float(b.obs[i, 0]), float(b.ret[i]), float(b.discount[i]), float(b.boot_obs[i, 0])))
    return out


def test_truncation_bootstraps_from_the_last_observation():
    # n=2, gamma=.5, rewards 1, 2, 3 from observations 0, 1, 2; the last observation is 3.
    assert _agent_samples(terminal=False, n=2, gamma=0.5) == {
        (0.0, 1 + 0.5 * 2, 0.25, 2.0),  # full window: bootstrap V(s_2) with gamma**2
        (1.0, 2 + 0.5 * 3, 0.25, 3.0),  # flushed by the time limit: V(s_3) with gamma**2
        (2.0, 3.0, 0.5, 3.0),  # one step left: V(s_3) with gamma**1
    }


def test_termination_does_not_bootstrap():
    assert _agent_samples(terminal=True, n=2, gamma=0.5) == {
        (0.0, 2.0, 0.25, 2.0),  # its window closed before the end: still bootstrapped
        (1.0, 3.5, 0.0, 3.0),
        (2.0, 3.0, 0.0, 3.0),
    }


def test_learner_targets_use_the_sample_discount():
    model = ActorCritic(1, 2, (4,))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.value.bias.fill_(10.0)  # V(s) = 10 everywhere
    learner = Learner(model, Config(lr=1e-9), torch.device("cpu"))
    batch = SampleBatch(
        obs=np.zeros((2, 1), np.float32), action=np.array([0, 1]), ret=np.array([1.0, 1.0], np.float32),
        discount=np.array([0.0, 0.5], np.float32), boot_obs=np.zeros((2, 1), np.float32),
        version=np.zeros(2, np.int64), behaviour_logp=np.full(2, 0.5, np.float32))
    stats, _ = learner.step(batch)
    # advantages: 1 + 0 * 10 - 10 = -9 (terminated) and 1 + 0.5 * 10 - 10 = -4 (bootstrapped)
    assert stats.value_loss == pytest.approx((81 + 16) / 2)
    assert stats.entropy == pytest.approx(math.log(2))


@pytest.mark.parametrize("name, steps", [("default", 400_000), ("nstep", 2_500_000)])
def test_learns_cartpole_on_a_small_budget(name, steps):
    """Both algorithms, each on about twice the steps its median run needs to solve."""
    result = train(preset(name, steps=steps, seconds=60, seed=1))
    # a random policy averages about 22 on CartPole-v1
    assert result.eval_episodes == 100
    assert result.eval_mean_return > 100, result
    assert result.updates > 0 and result.env_steps >= steps
    assert result.policy_lag_mean >= 0


def test_thread_learner_trains_too():
    result = train(Config(**SMALL, steps=100_000, seconds=30, learner="thread"))
    assert result.updates > 0 and result.env_steps >= 100_000
    assert math.isfinite(result.eval_mean_return)


def test_cancelling_mid_run_leaves_no_task_thread_or_process(assert_nothing_left, loop_factory):
    async def main():
        trainer = Trainer(Config(**SMALL, seconds=0))  # no budget: runs until cancelled
        task = asyncio.create_task(trainer.run())
        for _ in range(400):
            await asyncio.sleep(0.05)
            if trainer.learner is not None and trainer.learner.pid is not None:
                break
        await asyncio.sleep(1.0)  # training now
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert asyncio.all_tasks() == {asyncio.current_task()}
        return trainer.learner.pid

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        pid = runner.run(main())
    assert_nothing_left(pid)


def test_request_stop_ends_the_run_gracefully():
    async def main():
        async with Trainer(Config(**SMALL, seconds=0)) as trainer:
            await asyncio.sleep(2.0)
            trainer.request_stop()
            return await trainer.wait()

    result = asyncio.run(main())
    assert result.stop_reason == "requested"
    assert result.updates > 0 and math.isfinite(result.eval_mean_return)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(env="NoSuchEnv-v0"), r"unknown environment id 'NoSuchEnv-v0'"),
        (dict(env="asynca3c-test/OddActions-v0", env_kwargs={"kind": "unbounded"}),
         r"Box action space with infinite bounds"),
        (dict(env="asynca3c-test/OddActions-v0", env_kwargs={"kind": "matrix"}),
         r"Box action space of shape \(2, 2\); asynca3c supports one-dimensional"),
        (dict(env="asynca3c-test/OddActions-v0", env_kwargs={"kind": "multidiscrete"}),
         r"has action space MultiDiscrete.*supports Discrete and Box"),
        (dict(env="Blackjack-v1"), r"'Blackjack-v1' has observation space Tuple.*supports Box and Discrete"),
        (dict(env="CartPole-v1", env_kwargs={"no_such_arg": 1}), r"bad keyword arguments .*no_such_arg"),
    ],
)
def test_unusable_environments_are_refused_before_training(kwargs, match):
    with pytest.raises(EnvError, match=match):
        train(Config(**kwargs))


def test_discrete_observations_are_one_hot():
    result = train(Config(env="FrozenLake-v1", agents=1, envs_per_agent=8, eval_envs=8, steps=5_000,
                          seconds=30, final_eval_episodes=5))
    assert result.env_steps >= 5_000 and result.updates > 0
