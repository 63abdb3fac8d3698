"""Agent coroutine: steps a vector of environments with the shared policy,
turns transitions into n-step samples with the compiled kernel, and queues them.

The agent's inputs are a policy (something with ``async infer(obs)``) and its
outputs are ``SampleBatch``es on a queue, so it can later move out of process.
"""

from __future__ import annotations

import asyncio

import numpy as np

from asynca3c.core.actions import DiscreteActions, GaussianActions
from asynca3c.core.envs import ObsEncoder
from asynca3c.core.messages import SampleBatch
from asynca3c.core.returns import NStepKernel
from asynca3c.core.rewards import TrainingReward
from asynca3c.runtime.progress import Progress


class EpsilonSchedule:
    """Linear decay from ``start`` to ``end`` over ``steps`` environment steps (all agents)."""

    def __init__(self, start: float, end: float, steps: int):
        self.start, self.end, self.steps = start, end, steps

    def __call__(self, env_steps: int) -> float:
        if self.steps <= 0 or env_steps >= self.steps:
            return self.end
        return self.start + (self.end - self.start) * env_steps / self.steps


class Agent:
    """One agent and its vector of environments (NEXT_STEP autoreset)."""

    def __init__(self, *, envs, encoder: ObsEncoder, policy, actions: DiscreteActions | GaussianActions,
                 queue: asyncio.Queue | None, n_step: int, gamma: float, epsilon: EpsilonSchedule,
                 progress: Progress, seed: int, evaluation: bool = False,
                 reward: TrainingReward | None = None):
        self.envs, self.encode, self.policy, self.queue = envs, encoder, policy, queue
        self.actions = actions
        self.reward = reward or TrainingReward()  # what the kernel learns from
        self.num_envs = envs.num_envs
        self.kernel = NStepKernel(self.num_envs, n_step, gamma)
        self.epsilon, self.progress, self.evaluation = epsilon, progress, evaluation
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.stopping = False

    def stop(self) -> None:
        """Finish the current step, then return from ``run``."""
        self.stopping = True

    async def aclose(self) -> None:
        """Close the environments (also when ``run`` never started); closing twice is harmless."""
        self.envs.close()

    async def run(self) -> None:
        V, R = self.num_envs, self.kernel.n + 1  # rings hold the last n+1 steps
        raw, _ = self.envs.reset(seed=self.seed)
        obs = self.encode(raw)
        obs_ring = np.empty((R, V, obs.shape[1]), dtype=np.float32)
        act_ring = np.zeros((R, V, *self.actions.shape), dtype=self.actions.dtype)
        prob_ring = np.zeros((R, V), dtype=np.float32)
        ver_ring = np.zeros(R, dtype=np.int64)
        obs_ring[0] = obs
        resetting = np.zeros(V, dtype=bool)  # this step is an autoreset step
        ep_ret = np.zeros(V)
        ep_len = np.zeros(V, dtype=np.int64)
        u = 0
        try:
            while not self.stopping:
                params, version = await self.policy.infer(obs)
                actions, prob = self.actions.choose(params, self.epsilon(self.progress.env_steps), self.rng)
                raw, rew, term, trunc, _ = self.envs.step(self.actions.to_env(actions))
                rew = np.asarray(rew, dtype=np.float64)
                slot = u % R
                act_ring[slot], prob_ring[slot], ver_ring[slot] = actions, prob, version
                obs = self.encode(raw)
                obs_ring[(u + 1) % R] = obs
                live = ~resetting
                count = self.kernel.push(self.reward(rew, obs), term, trunc, live)
                self.progress.env_steps += int(live.sum())
                ep_ret += np.where(live, rew, 0.0)
                ep_len += live
                done = (term | trunc) & live
                if done.any():
                    for ret, length in zip(ep_ret[done].tolist(), ep_len[done].tolist()):
                        self.progress.add_episode(ret, self.evaluation, length)
                    ep_ret[done] = 0.0
                    ep_len[done] = 0
                resetting = term | trunc
                u += 1
                if count and self.queue is not None:
                    k = self.kernel
                    env, start, boot = k.env[:count], k.start[:count] % R, k.boot[:count] % R
                    await self.queue.put(SampleBatch(
                        obs=obs_ring[start, env],
                        action=act_ring[start, env],
                        ret=k.returns[:count].astype(np.float32),
                        discount=k.discounts[:count].astype(np.float32),
                        boot_obs=obs_ring[boot, env],
                        version=ver_ring[start],
                        behaviour_prob=prob_ring[start, env],
                    ))
        finally:
            self.envs.close()
