"""Agents for asynchronous environments: ``reset`` and ``step`` are coroutines.

A simulator behind a network call spends its step time waiting, so each such
environment gets its own coroutine: while one awaits its environment the
others act. The coroutines of a group share one n-step kernel (``push_one``),
ask the predictor for one action each (drawn inside its batch, see
``Predictor.choose``), and stage samples until a batch is worth queueing.

An async environment has ``observation_space``, ``action_space``,
``async reset(seed=None) -> (obs, info)``, ``async step(action) -> (obs,
reward, terminated, truncated, info)`` and optionally ``close()`` (plain or
coroutine) and ``spec.reward_threshold``. It ends its own episodes (no
TimeLimit wrapper is added).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from asynca3c.core.envs import ObsEncoder
from asynca3c.core.messages import SampleBatch
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


class AsyncEnvAgents:
    """One coroutine per async environment; together they act like one agent of the trainer."""

    def __init__(self, *, envs: list, encoder: ObsEncoder, policy: Predictor, queue: asyncio.Queue | None,
                 n_step: int, gamma: float, epsilon: EpsilonSchedule, progress: Progress, seed: int,
                 evaluation: bool = False, reward: TrainingReward | None = None):
        self.envs = AsyncEnvs(envs)
        self.reward = reward or TrainingReward()  # what the kernel learns from
        self.encode, self.policy, self.queue = encoder, policy, queue
        self.kernel = NStepKernel(len(envs), n_step, gamma)
        self.ring = n_step + 2  # each env's last steps: enough for any open window and its bootstrap
        self.epsilon, self.progress, self.evaluation = epsilon, progress, evaluation
        self.seed = seed
        self.batch = max(32, min(256, 8 * len(envs)))  # samples per queued batch: bigger groups, bigger batches
        self.stopping = False
        self._staged: list[tuple] = []

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
        """Step one environment: act, await its step, record the transition, stage samples."""
        k, R, progress, encode = self.kernel, self.ring, self.progress, self.encode
        # history[(kernel step + offset) % R] = (obs row, action, behaviour prob, version)
        history: list = [None] * R
        offset = 0  # +1 per episode: the reset observation takes a slot of its own
        t = 0  # kernel step + offset of the current observation
        raw, _ = await env.reset(seed=self.seed + i)
        obs = encode(_rows(raw))
        ep_ret, ep_len = 0.0, 0
        while not self.stopping:
            action, prob, version = await self.policy.choose(obs, self.epsilon(progress.env_steps))
            history[t % R] = (obs, action, prob, version)
            raw, reward, terminated, truncated, _ = await env.step(self.policy.actions.to_env(action))
            reward = float(reward)
            obs = encode(_rows(raw))
            history[(t + 1) % R] = (obs, None, None, None)
            count = k.push_one(i, self.reward.one(reward, obs), bool(terminated), bool(truncated))
            progress.env_steps += 1
            ep_ret += reward
            ep_len += 1
            t += 1
            if count and self.queue is not None:
                self._stage(history, offset, count)
            if terminated or truncated:
                progress.add_episode(ep_ret, self.evaluation, ep_len)
                ep_ret, ep_len = 0.0, 0
                offset += 1
                t += 1
                raw, _ = await env.reset()
                obs = encode(_rows(raw))
            if len(self._staged) >= self.batch:
                await self._flush()

    def _stage(self, history: list, offset: int, count: int) -> None:
        k, R = self.kernel, self.ring
        for start, boot, ret, disc in zip(k.start[:count].tolist(), k.boot[:count].tolist(),
                                          k.returns[:count].tolist(), k.discounts[:count].tolist(), strict=True):
            obs, action, prob, version = history[(start + offset) % R]
            self._staged.append((obs, action, ret, disc, history[(boot + offset) % R][0], version, prob))

    async def _flush(self) -> None:
        staged, self._staged = self._staged, []
        if not staged or self.queue is None:
            return
        obs, action, ret, disc, boot, version, prob = zip(*staged, strict=True)
        await self.queue.put(SampleBatch(
            obs=np.concatenate(obs), action=np.array(action, self.policy.actions.dtype), ret=np.array(ret, np.float32),
            discount=np.array(disc, np.float32), boot_obs=np.concatenate(boot),
            version=np.array(version, np.int64), behaviour_prob=np.array(prob, np.float32)))


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
