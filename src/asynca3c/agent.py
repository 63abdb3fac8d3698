"""Agent coroutine: steps a vector of environments with the shared policy,
turns transitions into n-step samples with the compiled kernel, and queues them.

The agent's inputs are a policy (something with ``async infer(obs)``) and its
outputs are ``SampleBatch``es on a queue, so it can later move out of process.
"""

from __future__ import annotations

import asyncio

import numpy as np

from asynca3c.envs import ObsEncoder
from asynca3c.progress import Progress
from asynca3c.returns import NStepKernel
from asynca3c.samples import SampleBatch


def sample_actions(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One action per row of ``probs``, drawn by inverse CDF (vectorized)."""
    cdf = probs.cumsum(axis=1)
    u = rng.random((len(probs), 1), dtype=np.float32) * cdf[:, -1:]
    return np.minimum((cdf < u).sum(axis=1), probs.shape[1] - 1)


def choose_actions(probs: np.ndarray, epsilon, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Actions sampled from ``probs``, each replaced by a uniform one with probability ``epsilon``
    (a number, or one per row); also each action's probability under that mixture (float32)."""
    n, k = probs.shape
    actions = sample_actions(probs, rng)
    explore = rng.random(n) < epsilon
    if explore.any():
        actions[explore] = rng.integers(0, k, int(explore.sum()))
    prob = (1 - epsilon) * probs[np.arange(n), actions] + epsilon / k
    return actions, prob.astype(np.float32)


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

    def __init__(self, *, envs, encoder: ObsEncoder, policy, queue: asyncio.Queue | None,
                 n_step: int, gamma: float, epsilon: EpsilonSchedule, progress: Progress,
                 seed: int, evaluation: bool = False):
        self.envs, self.encode, self.policy, self.queue = envs, encoder, policy, queue
        self.num_envs = envs.num_envs
        self.kernel = NStepKernel(self.num_envs, n_step, gamma)
        self.epsilon, self.progress, self.evaluation = epsilon, progress, evaluation
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.stopping = False

    def stop(self) -> None:
        """Finish the current step, then return from ``run``."""
        self.stopping = True

    async def run(self) -> None:
        V, R = self.num_envs, self.kernel.n + 1  # rings hold the last n+1 steps
        raw, _ = self.envs.reset(seed=self.seed)
        obs = self.encode(raw)
        obs_ring = np.empty((R, V, obs.shape[1]), dtype=np.float32)
        act_ring = np.zeros((R, V), dtype=np.int64)
        prob_ring = np.zeros((R, V), dtype=np.float32)
        ver_ring = np.zeros(R, dtype=np.int64)
        obs_ring[0] = obs
        resetting = np.zeros(V, dtype=bool)  # this step is an autoreset step
        ep_ret = np.zeros(V)
        u = 0
        try:
            while not self.stopping:
                probs, version = await self.policy.infer(obs)
                actions, prob = choose_actions(probs, self.epsilon(self.progress.env_steps), self.rng)
                raw, rew, term, trunc, _ = self.envs.step(actions)
                rew = np.asarray(rew, dtype=np.float64)
                slot = u % R
                act_ring[slot], prob_ring[slot], ver_ring[slot] = actions, prob, version
                obs = self.encode(raw)
                obs_ring[(u + 1) % R] = obs
                live = ~resetting
                count = self.kernel.push(rew, term, trunc, live)
                self.progress.env_steps += int(live.sum())
                ep_ret += np.where(live, rew, 0.0)
                done = (term | trunc) & live
                if done.any():
                    for ret in ep_ret[done]:
                        self.progress.add_episode(float(ret), self.evaluation)
                    ep_ret[done] = 0.0
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
