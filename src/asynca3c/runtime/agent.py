"""Agent coroutines: step a vector of environments with the shared policy and ship what they saw.

One loop serves both algorithms; what differs is how transitions become
messages. ``Agent`` turns them into n-step samples with the compiled kernel
(``SampleBatch``, the seed's A3C); ``SegmentAgent`` ships fixed-length
``Segment``s of ``[T, envs]`` steps whose targets the learner computes with
V-trace. The agent's inputs are a policy (something with ``async infer(obs)``)
and its outputs go to a queue (anything with ``async put``), so it can later
move out of process.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from asynca3c.core.actions import Actions
from asynca3c.core.envs import ObsEncoder
from asynca3c.core.messages import SampleBatch, Segment
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


class Outbox(Protocol):
    """Where an agent's messages go: an ``asyncio.Queue``, or the deterministic mode's direct learner."""

    async def put(self, item: Any) -> None: ...


class _VectorAgent:
    """The acting loop shared by both kinds: infer, choose (epsilon mixed in), step, count episodes."""

    def __init__(self, *, envs, encoder: ObsEncoder, policy, actions: Actions, queue: Outbox | None,
                 epsilon: EpsilonSchedule, progress: Progress, seed: int, reward: TrainingReward | None = None,
                 step_limit: int = 0):
        """``step_limit``: return once the run's step count reaches it (0: no limit); the deterministic
        mode stops at the exact step this way rather than when the budget monitor next looks."""
        self.envs, self.encode, self.policy, self.queue = envs, encoder, policy, queue
        self.step_limit = step_limit
        self.actions = actions
        self.reward = reward or TrainingReward()  # what the learner learns from
        self.num_envs = envs.num_envs
        self.epsilon, self.progress = epsilon, progress
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
        V = self.num_envs
        raw, _ = self.envs.reset(seed=self.seed)
        obs = self.encode(raw)
        self._begin(obs)
        resetting = np.zeros(V, dtype=bool)  # this step is an autoreset step
        explored = np.zeros(V, dtype=bool)  # epsilon was > 0 at a step of this episode: not judged
        ep_ret = np.zeros(V)
        ep_len = np.zeros(V, dtype=np.int64)
        try:
            while not self.stopping and not (self.step_limit and self.progress.env_steps >= self.step_limit):
                params, version = await self.policy.infer(obs)
                eps = self.epsilon(self.progress.env_steps)
                actions, logp = self.actions.choose(params, eps, self.rng)
                raw, rew, term, trunc, _ = self.envs.step(self.actions.to_env(actions))
                rew = np.asarray(rew, dtype=np.float64)
                obs = self.encode(raw)
                live = ~resetting
                term, trunc = np.asarray(term, dtype=bool), np.asarray(trunc, dtype=bool)
                message = self._record(actions, logp, version, self.reward(rew, obs), term, trunc, live, obs)
                self.progress.env_steps += int(live.sum())
                if eps > 0:
                    explored |= live
                ep_ret += np.where(live, rew, 0.0)
                ep_len += live
                done = (term | trunc) & live
                if done.any():
                    for ret, length, judged in zip(ep_ret[done].tolist(), ep_len[done].tolist(),
                                                   (~explored[done]).tolist()):
                        self.progress.add_episode(ret, judged, length)
                    ep_ret[done] = 0.0
                    ep_len[done] = 0
                    explored[done] = False
                resetting = term | trunc
                if message is not None and self.queue is not None:
                    await self.queue.put(message)
        finally:
            self.envs.close()

    def _begin(self, obs: np.ndarray) -> None:
        """The first observations, before any step."""
        raise NotImplementedError

    def _record(self, actions, logp, version: int, reward: np.ndarray, term: np.ndarray, trunc: np.ndarray,
                live: np.ndarray, obs: np.ndarray) -> SampleBatch | Segment | None:
        """One step of every env (``live``: not an autoreset step); a message to ship, if one is complete."""
        raise NotImplementedError


class Agent(_VectorAgent):
    """n-step samples from the compiled kernel: rings hold each env's last n+1 steps."""

    def __init__(self, *, n_step: int, gamma: float, **kw):
        super().__init__(**kw)
        self.kernel = NStepKernel(self.num_envs, n_step, gamma)
        self._u = 0

    def _begin(self, obs: np.ndarray) -> None:
        R, V = self.kernel.n + 1, self.num_envs
        self.obs_ring = np.empty((R, V, obs.shape[1]), dtype=np.float32)
        self.act_ring = np.zeros((R, V, *self.actions.shape), dtype=self.actions.dtype)
        self.logp_ring = np.zeros((R, V), dtype=np.float32)
        self.ver_ring = np.zeros(R, dtype=np.int64)
        self.obs_ring[0] = obs

    def _record(self, actions, logp, version, reward, term, trunc, live, obs) -> SampleBatch | None:
        R, u = self.kernel.n + 1, self._u
        slot = u % R
        self.act_ring[slot], self.logp_ring[slot], self.ver_ring[slot] = actions, logp, version
        self.obs_ring[(u + 1) % R] = obs
        count = self.kernel.push(reward, term, trunc, live)
        self._u = u + 1
        if not count:
            return None
        k = self.kernel
        env, start, boot = k.env[:count], k.start[:count] % R, k.boot[:count] % R
        return SampleBatch(obs=self.obs_ring[start, env], action=self.act_ring[start, env],
                           ret=k.returns[:count].astype(np.float32), discount=k.discounts[:count].astype(np.float32),
                           boot_obs=self.obs_ring[boot, env], version=self.ver_ring[start],
                           behaviour_logp=self.logp_ring[start, env])


class SegmentAgent(_VectorAgent):
    """Fixed-length segments of ``[T, envs]`` steps; consecutive segments share their boundary observation."""

    def __init__(self, *, segment_length: int, **kw):
        super().__init__(**kw)
        self.T = segment_length

    def _begin(self, obs: np.ndarray) -> None:
        """A new segment whose first row is ``obs`` (the run's first observations, or the last row of the
        segment just shipped)."""
        self.seg = Segment.empty(self.T, self.num_envs, obs.shape[1], self.actions.shape, self.actions.dtype)
        self.seg.obs[0] = obs
        self._t = 0

    def _record(self, actions, logp, version, reward, term, trunc, live, obs) -> Segment | None:
        bad = live & ~np.isfinite(reward)
        if bad.any():  # as the n-step kernel refuses them: a NaN target would reach the learner
            i = int(bad.argmax())
            raise ValueError(f"rewards must be finite, got {float(reward[i])!r} for env {i}")
        t, seg = self._t, self.seg
        seg.action[t], seg.behaviour_logp[t], seg.version[t] = actions, logp, version
        seg.reward[t] = np.where(live, reward, 0.0)
        seg.terminated[t], seg.truncated[t], seg.valid[t] = term & live, trunc & live, live
        seg.obs[t + 1] = obs
        self._t = t + 1
        if self._t < self.T:
            return None
        self._begin(obs)
        return seg


__all__ = ["Agent", "EpsilonSchedule", "Outbox", "SegmentAgent"]
