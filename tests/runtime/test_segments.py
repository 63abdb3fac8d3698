"""Learning under lag: segments as agents ship them, fixed-size batches, the V-trace learner, the
non-finite guard, judged episodes, lag figures, and the deterministic mode."""

from __future__ import annotations

import asyncio
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from asynca3c import Config, EnvFault, LearnerError, train
from asynca3c.core.actions import for_spec as actions_for
from asynca3c.core.envs import ObsEncoder, inspect_env, make_vector_env
from asynca3c.core.learner import Learner
from asynca3c.core.messages import SampleBatch, Segment
from asynca3c.core.model import ActorCritic
from asynca3c.runtime.agent import EpsilonSchedule, SegmentAgent
from asynca3c.runtime.async_agents import AsyncEnvAgents
from asynca3c.runtime.progress import Progress
from asynca3c.runtime.updates import SegmentBatcher


class CountEnv(gym.Env):
    """Observation = steps taken in the episode; reward 1; terminates after ``length`` steps."""

    observation_space = gym.spaces.Box(0.0, 100.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, length: int = 3):
        self.length, self.t = length, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t], np.float32), 1.0, self.t == self.length, False, {}


gym.register("asynca3c-test/Count-v0", entry_point=CountEnv)


class StopAfter:
    """Uniform policy at version 7 that stops the agent after ``calls`` requests."""

    def __init__(self, calls: int):
        self.calls, self.agent = calls, None

    async def infer(self, obs):
        self.calls -= 1
        if self.calls == 0:
            self.agent.stop()
        return np.full((len(obs), 2), 0.5, np.float32), 7


def ship_segments(T: int, steps: int, epsilon: float = 0.0) -> tuple[list[Segment], Progress]:
    spec = inspect_env("asynca3c-test/Count-v0")
    queue: asyncio.Queue = asyncio.Queue()
    policy = StopAfter(steps)
    progress = Progress(100, None)
    agent = SegmentAgent(envs=make_vector_env("asynca3c-test/Count-v0", 2), encoder=ObsEncoder(spec), policy=policy,
                         actions=actions_for(spec), queue=queue, epsilon=EpsilonSchedule(epsilon, epsilon, 0),
                         progress=progress, seed=0, segment_length=T)
    policy.agent = agent
    asyncio.run(agent.run())
    return [queue.get_nowait() for _ in range(queue.qsize())], progress


def test_segments_hold_observations_once_and_mark_the_autoreset_step():
    segs, _ = ship_segments(T=5, steps=10)
    assert len(segs) == 2
    a, b = segs
    assert a.obs.shape == (6, 2, 1) and a.reward.shape == (5, 2) and a.version.shape == (5, 2)
    # obs 0 1 2 3(final) then the autoreset step's reset obs 0; the next segment starts where this one ended
    np.testing.assert_array_equal(a.obs[:, 0, 0], [0, 1, 2, 3, 0, 1])
    np.testing.assert_array_equal(b.obs[0], a.obs[-1])
    np.testing.assert_array_equal(a.terminated[:, 0], [False, False, True, False, False])
    np.testing.assert_array_equal(a.valid[:, 0], [True, True, True, False, True])
    np.testing.assert_array_equal(a.reward[:, 0], [1, 1, 1, 0, 1])  # the autoreset step earns nothing
    assert (a.version == 7).all()
    np.testing.assert_allclose(a.behaviour_logp, np.log(0.5), rtol=1e-6)


class AsyncCountEnv:
    """CountEnv with coroutine ``reset``/``step``: driven by AsyncEnvAgents, which reset it themselves."""

    observation_space = CountEnv.observation_space
    action_space = CountEnv.action_space

    def __init__(self):
        self.env = CountEnv()

    async def reset(self, seed=None):
        return self.env.reset(seed=seed)

    async def step(self, action):
        return self.env.step(action)


class ChooseStopAfter:
    """The predictor's per-row surface: a uniform choice at version 7; stops the group after ``calls``."""

    def __init__(self, calls: int, actions):
        self.calls, self.actions, self.agent = calls, actions, None

    async def choose(self, row, epsilon, state=None):
        self.calls -= 1
        if self.calls == 0:
            self.agent.stop()
        return 0, float(np.log(0.5)), 7, None


def test_async_envs_ship_the_same_segment_layout_as_vector_envs():
    spec = inspect_env("asynca3c-test/Count-v0")
    queue: asyncio.Queue = asyncio.Queue()
    policy = ChooseStopAfter(13, actions_for(spec))
    agents = AsyncEnvAgents(envs=[AsyncCountEnv()], encoder=ObsEncoder(spec), policy=policy, queue=queue, n_step=5,
                            gamma=0.99, epsilon=EpsilonSchedule(0.0, 0.0, 0), progress=Progress(100, None), seed=0,
                            segment_length=5)
    policy.agent = agents
    asyncio.run(agents.run())
    segs = [queue.get_nowait() for _ in range(queue.qsize())]
    assert len(segs) == 3  # 13 actions + 4 reset steps: 3 segments of 5, the partial one dropped at stop
    a, b, _ = segs
    assert a.obs.shape == (6, 1, 1) and a.version.shape == (5, 1)
    np.testing.assert_array_equal(a.obs[:, 0, 0], [0, 1, 2, 3, 0, 1])
    np.testing.assert_array_equal(b.obs[:, 0, 0], [1, 2, 3, 0, 1, 2])
    np.testing.assert_array_equal(a.terminated[:, 0], [False, False, True, False, False])
    np.testing.assert_array_equal(a.valid[:, 0], [True, True, True, False, True])
    np.testing.assert_array_equal(b.valid[:, 0], [True, True, False, True, True])
    np.testing.assert_array_equal(a.reward[:, 0], [1, 1, 1, 0, 1])
    assert (a.version == 7).all() and (b.version == 7).all()
    np.testing.assert_allclose(a.behaviour_logp[a.valid], np.log(0.5), rtol=1e-6)


def test_only_episodes_played_without_epsilon_are_judged():
    _, progress = ship_segments(T=4, steps=12, epsilon=0.0)
    assert progress.eval_episodes == progress.episodes == 6  # 2 envs x 3 episodes of 3 steps (+ autoresets)
    _, progress = ship_segments(T=4, steps=12, epsilon=0.5)
    assert progress.episodes == 6 and progress.eval_episodes == 0 and len(progress.train_returns) == 6


def segment(T: int, E: int, rng: np.random.Generator, version: int = 0) -> Segment:
    return Segment(obs=rng.normal(size=(T + 1, E, 4)).astype(np.float32), action=rng.integers(0, 2, (T, E)),
                   reward=rng.normal(size=(T, E)).astype(np.float32), terminated=np.zeros((T, E), bool),
                   truncated=np.zeros((T, E), bool), valid=np.ones((T, E), bool),
                   behaviour_logp=np.full((T, E), np.log(0.5), np.float32),
                   version=np.full((T, E), version, np.int64), state0=np.zeros((1, E, 0), np.float32))


def test_batches_have_exactly_batch_envs_columns_and_keep_the_rest():
    rng = np.random.default_rng(0)
    batcher = SegmentBatcher(batch_envs=5)
    assert batcher.add(segment(3, 4, rng)) == []
    first = batcher.add(segment(3, 4, rng, version=1))  # 8 columns held: one batch of 5, 3 wait
    assert [b.envs for b in first] == [5] and first[0].obs.shape == (4, 5, 4)
    np.testing.assert_array_equal(first[0].version[0], [0, 0, 0, 0, 1])
    second = batcher.add(segment(3, 12, rng, version=2))  # 3 + 12 = 15: three batches
    assert [b.envs for b in second] == [5, 5, 5]
    np.testing.assert_array_equal(second[0].version[0], [1, 1, 1, 2, 2])


def learner(**cfg) -> Learner:
    torch.manual_seed(0)
    return Learner(ActorCritic(4, 2, (16,)), Config(**cfg), torch.device("cpu"))


def test_learn_takes_epochs_times_minibatches_steps_and_reports_lag_and_rho():
    rng = np.random.default_rng(1)
    ln = learner(epochs=3, minibatches=2, optimizer="adam")
    ln.version = 10
    seg = segment(8, 6, rng, version=4)
    stats, weights = ln.learn(seg)
    assert stats.steps == 6 and ln.version == 16 and stats.version == 16
    assert stats.batch_size == 8 * 6 * 3  # samples x epochs
    assert stats.lag_max == 10 + 5 - 4  # the last minibatch saw version 15; its samples were acted by 4
    assert stats.lag_sum / stats.batch_size == pytest.approx(np.mean([10 - 4 + k for k in range(6)]))
    assert 0 < stats.rho_mean and 0 <= stats.rho_clipped <= 1 and stats.kl >= 0
    assert len(weights) == len(ln.model.shipped()) and stats.nonfinite == 0


@pytest.mark.parametrize("clip_ratio", [0.0, 0.2])
def test_the_uncorrected_update_ignores_mu_but_reports_the_real_rho(clip_ratio):
    """importance_correction=False (the comparison in bench/bench_lag.py) trains as if every segment were
    on-policy, so mu cannot change the weights; the corrected update does depend on it."""
    rng = np.random.default_rng(3)
    seg = segment(8, 6, rng)
    stale = Segment(**{**vars(seg), "behaviour_logp": np.full((8, 6), np.log(0.05), np.float32)})

    def weights_after(s, correct):
        ln = learner(clip_ratio=clip_ratio, importance_correction=correct)
        stats, weights = ln.learn(s)
        return stats, weights

    (fresh_stats, fresh), (stale_stats, stale_w) = weights_after(seg, False), weights_after(stale, False)
    assert all(torch.equal(a, b) for a, b in zip(fresh, stale_w, strict=True))
    assert stale_stats.rho_mean > 5 * fresh_stats.rho_mean  # pi/mu as the data has it, corrected for or not
    (_, corrected), (_, corrected_stale) = weights_after(seg, True), weights_after(stale, True)
    assert not all(torch.equal(a, b) for a, b in zip(corrected, corrected_stale, strict=True))


def test_the_policy_gradient_prefers_the_rewarded_action():
    """A bandit in segment form: every step terminates, action 0 pays 1, action 1 pays 0. Acting with the
    current policy and learning from V-trace advantages moves pi(0) towards 1 and V towards the mean."""
    rng = np.random.default_rng(2)
    ln = learner(lr=0.01)
    T, E = 4, 64
    for _ in range(40):
        obs = rng.normal(size=(T + 1, E, 4)).astype(np.float32)
        with torch.no_grad():
            out, _ = ln.model(torch.from_numpy(obs[:T].reshape(-1, 4)))
            probs = torch.softmax(out, -1).numpy()
        actions = (rng.random(T * E) > probs[:, 0]).astype(np.int64)  # 0 with probability pi(0)
        seg = Segment(obs=obs, action=actions.reshape(T, E), reward=(actions == 0).astype(np.float32).reshape(T, E),
                      terminated=np.ones((T, E), bool), truncated=np.zeros((T, E), bool), valid=np.ones((T, E), bool),
                      behaviour_logp=np.log(probs[np.arange(T * E), actions]).reshape(T, E).astype(np.float32),
                      version=np.full((T, E), ln.version, np.int64), state0=np.zeros((1, E, 0), np.float32))
        stats, _ = ln.learn(seg)
        assert stats.rho_mean == pytest.approx(1.0, abs=1e-5)  # acted by this very policy: on-policy
    with torch.no_grad():
        out, values = ln.model(torch.from_numpy(rng.normal(size=(256, 4)).astype(np.float32)))
    p0 = torch.softmax(out, -1)[:, 0]
    assert p0.mean() > 0.9
    assert values.mean().item() == pytest.approx(p0.mean().item(), abs=0.15)


def nstep_batch() -> SampleBatch:
    return SampleBatch(obs=np.zeros((2, 4), np.float32), action=np.array([0, 1]), ret=np.ones(2, np.float32),
                       discount=np.zeros(2, np.float32), boot_obs=np.zeros((2, 4), np.float32),
                       version=np.zeros(2, np.int64), behaviour_logp=np.zeros(2, np.float32))


def test_a_non_finite_loss_skips_the_step_keeps_the_weights_and_stops_after_a_run_of_them():
    ln = learner(max_nonfinite_steps=3, epochs=1, minibatches=1)
    with torch.no_grad():
        ln.model.value.weight.fill_(math.inf)  # every value inf: no finite loss or target
    before = {k: v.clone() for k, v in ln.model.state_dict().items()}
    stats, _ = ln.step(nstep_batch())
    assert (stats.steps, stats.nonfinite, ln.version) == (0, 1, 0)
    stats, _ = ln.learn(segment(4, 4, np.random.default_rng(3)))
    assert (stats.steps, stats.nonfinite, ln.version) == (0, 1, 0)
    assert stats.batch_size == 0 and math.isnan(stats.lag_max)  # nothing trained: no samples, no lag
    for name, tensor in ln.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert not ln.optimizer.state  # no optimizer step ever ran
    with pytest.raises(LearnerError, match="3 non-finite losses or gradients in a row.*last good one"):
        ln.step(nstep_batch())


class NanRewardEnv(CountEnv):
    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        return obs, math.nan, terminated, truncated, info


gym.register("asynca3c-test/NanReward-v0", entry_point=NanRewardEnv)


@pytest.mark.filterwarnings("ignore:.*reward is a NaN value")  # gymnasium's env checker says so first
def test_a_non_finite_reward_is_an_env_fault_before_any_learner_sees_it():
    with pytest.raises(EnvFault, match=r"Count-v0|NanReward-v0.*a non-finite reward \(nan\)"):
        train(Config(env="asynca3c-test/NanReward-v0", seconds=10, final_eval_episodes=0))


def test_a_finite_step_resets_the_count():
    ln = learner(max_nonfinite_steps=2, epochs=1, minibatches=1)
    weight = ln.model.value.weight.detach().clone()
    with torch.no_grad():
        ln.model.value.weight.fill_(math.nan)
    assert ln.step(nstep_batch())[0].nonfinite == 1
    with torch.no_grad():
        ln.model.value.weight.copy_(weight)
    assert ln.step(nstep_batch())[0].steps == 1 and ln.nonfinite_in_a_row == 0


DET = dict(deterministic=True, agents=1, envs_per_agent=8, eval_envs=0, batch_envs=8, segment_length=8, steps=6_000,
           seconds=0, final_eval_episodes=0, log_interval=0.2)


def test_the_deterministic_mode_repeats_a_run_exactly(tmp_path):
    first = train(Config(**DET), run_dir=tmp_path / "a")
    second = train(Config(**DET), run_dir=tmp_path / "b")
    assert first.env_steps == second.env_steps and first.updates == second.updates > 0
    assert first.episodes == second.episodes
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)["model"]
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert first.policy_lag_mean == second.policy_lag_mean
    # acting waits for learning: a sample is at most one batch's steps (2 epochs x 2 minibatches) old
    assert first.policy_lag_mean <= 4


def test_the_deterministic_mode_learns_cartpole_on_a_small_budget():
    result = train(Config(**{**DET, "envs_per_agent": 32, "batch_envs": 32, "segment_length": 16,
                             "steps": 150_000, "final_eval_episodes": 20}))
    assert result.eval_mean_return >= 150  # a uniform policy averages about 22


def test_lag_figures_reach_the_metrics_row(tmp_path):
    rows = []
    train(Config(seconds=1.5, final_eval_episodes=0, log_interval=0.25), run_dir=tmp_path, on_progress=rows.append)
    last = rows[-1]
    for key in ("policy_lag_mean", "policy_lag_max", "rho_mean", "rho_clipped_fraction", "kl_behaviour"):
        assert math.isfinite(last[key]), key
    assert last["policy_lag_max"] >= last["policy_lag_mean"] >= 0 and last["rho_mean"] > 0
    assert last["nonfinite_steps"] == 0
    header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    assert {"policy_lag_max", "rho_mean", "rho_clipped_fraction", "kl_behaviour", "nonfinite_steps"} <= set(header)


@pytest.mark.parametrize(("change", "message"), [
    (dict(algorithm="ppo"), "algorithm='ppo' is not allowed: nstep or vtrace"),
    (dict(optimizer="sgd"), "optimizer='sgd' is not allowed: rmsprop or adam"),
    (dict(minibatches=100, batch_envs=64), "minibatches=100 is not allowed: an integer <= batch_envs (64)"),
    (dict(clip_ratio=1.0), "clip_ratio=1.0 is not allowed: a number in [0, 1)"),
    (dict(rho_bar=0.0), "rho_bar=0.0 is not allowed: a finite number > 0"),
    (dict(c_bar=float("inf")), "c_bar=inf is not allowed: a finite number > 0"),
    (dict(segment_length=0), "segment_length=0 is not allowed: an integer >= 1"),
    (dict(deterministic=True), "deterministic=True is not allowed: only with agents=1 (got 2)"),
    (dict(deterministic=True, agents=1, eval_envs=4), "only with eval_envs=0 (got 4)"),
    (dict(deterministic=True, agents=1, algorithm="nstep"), "only with algorithm='vtrace'"),
])
def test_bad_learning_settings_are_refused(change, message):
    from asynca3c import ConfigError

    with pytest.raises(ConfigError, match=__import__("re").escape(message)):
        Config(**change)


def test_the_deterministic_mode_refuses_async_environments():
    from asynca3c import ConfigError, Trainer

    with pytest.raises(ConfigError, match="deterministic=True is not allowed with env_factory"):
        Trainer(Config(**DET), env_factory=AsyncCountEnv)

