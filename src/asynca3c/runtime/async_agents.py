"""Agents for asynchronous environments: ``reset`` and ``step`` are coroutines.

A simulator behind a network call spends its step time waiting, so each such
environment gets its own coroutine: while one awaits its environment the
others act. The coroutines of a group ask the predictor for one action each
(drawn inside its batch, see ``Predictor.choose``) and stage what they
recorded until a batch is worth queueing: n-step samples from one shared
kernel (``push_one``), or one segment column per env (vtrace).

An async environment has ``observation_space``, ``action_space``,
``async reset(seed=None) -> (obs, info)``, ``async step(action) -> (obs,
reward, terminated, truncated, info)`` and optionally ``close()`` (plain or
coroutine) and ``spec.reward_threshold``. It ends its own episodes (no
TimeLimit wrapper is added).
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from asynca3c.core.envs import ObsEncoder
from asynca3c.core.messages import SampleBatch, Segment
from asynca3c.core.returns import NStepKernel
from asynca3c.core.rewards import TrainingReward
from asynca3c.runtime.agent import EpsilonSchedule
from asynca3c.runtime.predictor import Predictor
from asynca3c.runtime.progress import Progress


class AsyncEnvs:
    """The environments of one group; ``aclose`` closes each once (plain or coroutine ``close``)."""

    def __init__(self, envs: list):
        self.envs = envs
        self.num_envs = len(envs)
        self._closed = False

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for env in self.envs:
            close = getattr(env, "close", None)
            if close is not None:
                result = close()
                if inspect.isawaitable(result):
                    await result


class _NStepRecorder:
    """n-step samples from one kernel shared by the group (``push_one``): a ring per env holds its last
    steps, enough for any open window and its bootstrap."""

    def __init__(self, num_envs: int, n_step: int, gamma: float, action_dtype):
        self.kernel = NStepKernel(num_envs, n_step, gamma)
        self.R = n_step + 2
        self.action_dtype = action_dtype
        # history[i][(kernel step + offset) % R] = (obs row, action, behaviour log-prob, version)
        self.history: list[list] = [[None] * self.R for _ in range(num_envs)]
        self.offset = [0] * num_envs  # +1 per episode: the reset observation takes a slot of its own
        self.t = [0] * num_envs  # kernel step + offset of the current observation

    def begin(self, i: int, obs: np.ndarray) -> None:
        self.history[i][self.t[i] % self.R] = (obs, None, None, None)

    def step(self, i, obs, action, logp, version, reward, terminated, truncated, next_obs) -> list:
        R, h, t = self.R, self.history[i], self.t[i]
        h[t % R] = (obs, action, logp, version)
        h[(t + 1) % R] = (next_obs, None, None, None)
        self.t[i] = t + 1
        count = self.kernel.push_one(i, reward, terminated, truncated)
        k, off = self.kernel, self.offset[i]
        out = []
        for start, boot, ret, disc in zip(k.start[:count].tolist(), k.boot[:count].tolist(),
                                          k.returns[:count].tolist(), k.discounts[:count].tolist(), strict=True):
            o, a, lp, v = h[(start + off) % R]
            out.append((o, a, ret, disc, h[(boot + off) % R][0], v, lp))
        return out

    def reset(self, i: int, obs: np.ndarray) -> list:
        """The reset observation takes a slot of its own; nothing is complete yet."""
        self.offset[i] += 1
        self.t[i] += 1
        self.begin(i, obs)
        return []

    def message(self, staged: list) -> SampleBatch:
        obs, action, ret, disc, boot, version, logp = zip(*staged, strict=True)
        return SampleBatch(
            obs=np.concatenate(obs), action=np.array(action, self.action_dtype), ret=np.array(ret, np.float32),
            discount=np.array(disc, np.float32), boot_obs=np.concatenate(boot),
            version=np.array(version, np.int64), behaviour_logp=np.array(logp, np.float32))


class _SegmentRecorder:
    """Segments of T steps, one column per env; an env's episode end is followed by an invalid step
    whose next observation is the reset one, exactly the layout a NEXT_STEP-autoreset vector env gives
    (see ``Segment``), so the learner treats both kinds alike."""

    def __init__(self, num_envs: int, T: int, action_shape: tuple, action_dtype):
        self.T, self.action_shape, self.action_dtype = T, action_shape, action_dtype
        self.segs: dict[int, Segment] = {}  # env -> the segment it is filling (from begin on)
        self.t = [0] * num_envs
        self.version = [0] * num_envs  # the last version that acted: what an invalid step is tagged with

    def begin(self, i: int, obs: np.ndarray) -> None:
        self.segs[i] = Segment.empty(self.T, 1, obs.shape[1], self.action_shape, self.action_dtype)
        self.segs[i].obs[0] = obs
        self.t[i] = 0

    def _put(self, i: int, next_obs: np.ndarray, valid: bool, action=0, logp=0.0, reward=0.0,
             terminated=False, truncated=False) -> list[Segment]:
        seg, t = self.segs[i], self.t[i]
        seg.action[t], seg.behaviour_logp[t], seg.version[t] = action, logp, self.version[i]
        seg.reward[t], seg.terminated[t], seg.truncated[t], seg.valid[t] = reward, terminated, truncated, valid
        seg.obs[t + 1] = next_obs
        self.t[i] = t + 1
        if self.t[i] < self.T:
            return []
        self.begin(i, next_obs)
        return [seg]

    def step(self, i, obs, action, logp, version, reward, terminated, truncated, next_obs) -> list[Segment]:
        if not math.isfinite(reward):  # as the n-step kernel refuses them
            raise ValueError(f"rewards must be finite, got {reward!r} for env {i}")
        self.version[i] = version
        return self._put(i, next_obs, True, action, logp, reward, terminated, truncated)

    def reset(self, i: int, obs: np.ndarray) -> list[Segment]:
        """The invalid step between episodes: no action taken, no reward, the reset observation next."""
        return self._put(i, obs, False)

    def message(self, staged: list) -> Segment:
        return Segment.concat(staged)


class AsyncEnvAgents:
    """One coroutine per async environment; together they act like one agent of the trainer. They ship
    n-step samples, or segments of ``segment_length`` steps when that is set (vtrace)."""

    def __init__(self, *, envs: list, encoder: ObsEncoder, policy: Predictor, queue: asyncio.Queue | None,
                 n_step: int, gamma: float, epsilon: EpsilonSchedule, progress: Progress, seed: int,
                 reward: TrainingReward | None = None, segment_length: int | None = None):
        self.envs = AsyncEnvs(envs)
        self.reward = reward or TrainingReward()  # what the learner learns from
        self.encode, self.policy, self.queue = encoder, policy, queue
        actions = policy.actions
        self.recorder: _NStepRecorder | _SegmentRecorder
        if segment_length is None:
            self.recorder = _NStepRecorder(len(envs), n_step, gamma, actions.dtype)
            self.batch = max(32, min(256, 8 * len(envs)))  # samples per queued batch: bigger groups, bigger batches
        else:
            self.recorder = _SegmentRecorder(len(envs), segment_length, actions.shape, actions.dtype)
            self.batch = len(envs)  # env columns per queued segment
        self.epsilon, self.progress = epsilon, progress
        self.seed = seed
        self.stopping = False
        self._staged: list = []

    def stop(self) -> None:
        """Every coroutine finishes its current step, then ``run`` returns."""
        self.stopping = True

    async def aclose(self) -> None:
        """Close the environments (also when ``run`` never started); closing twice is harmless."""
        await self.envs.aclose()

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                for i, env in enumerate(self.envs.envs):
                    tg.create_task(self._drive(i, env), name=f"asynca3c-async-env-{i}")
            await self._flush()
        finally:
            await self.envs.aclose()

    async def _drive(self, i: int, env) -> None:
        """Step one environment: act, await its step, record the transition, stage what is complete."""
        progress, encode, rec = self.progress, self.encode, self.recorder
        raw, _ = await env.reset(seed=self.seed + i)
        obs = encode(_rows(raw))
        rec.begin(i, obs)
        ep_ret, ep_len, explored = 0.0, 0, False  # explored: epsilon > 0 at a step, so the episode is not judged
        while not self.stopping:
            eps = self.epsilon(progress.env_steps)
            explored |= eps > 0
            action, logp, version = await self.policy.choose(obs, eps)
            raw, reward, terminated, truncated, _ = await env.step(self.policy.actions.to_env(action))
            reward = float(reward)
            next_obs = encode(_rows(raw))
            self._staged += rec.step(i, obs, action, logp, version, self.reward.one(reward, next_obs),
                                     bool(terminated), bool(truncated), next_obs)
            obs = next_obs
            progress.env_steps += 1
            ep_ret += reward
            ep_len += 1
            if terminated or truncated:
                progress.add_episode(ep_ret, not explored, ep_len)
                ep_ret, ep_len, explored = 0.0, 0, False
                raw, _ = await env.reset()
                obs = encode(_rows(raw))
                self._staged += rec.reset(i, obs)
            if len(self._staged) >= self.batch:
                await self._flush()

    async def _flush(self) -> None:
        staged, self._staged = self._staged, []
        if staged and self.queue is not None:
            await self.queue.put(self.recorder.message(staged))


def _rows(raw):
    """One observation as a batch of one, for the encoder."""
    return np.asarray(raw)[None] if not np.isscalar(raw) else np.array([raw])


async def evaluate_async_envs(make_env: Callable[[], Any], policy: Predictor, encoder: ObsEncoder,
                              episodes: int, seed: int) -> list[float]:
    """Returns of ``episodes`` fresh episodes without epsilon, each on its own env, played concurrently."""

    async def episode(j: int) -> float:
        env = make_env()
        try:
            raw, _ = await env.reset(seed=seed + j)
            total, done = 0.0, False
            while not done:
                action, _, _ = await policy.choose(encoder(_rows(raw)), 0.0)
                raw, reward, terminated, truncated, _ = await env.step(policy.actions.to_env(action))
                total += float(reward)
                done = bool(terminated or truncated)
            return total
        finally:
            await AsyncEnvs([env]).aclose()

    return list(await asyncio.gather(*(episode(j) for j in range(episodes))))
