"""Acting shards in worker processes: they learn, a killed or silent shard is restarted and counted,
too many deaths stop the run with one clear error, and nothing is left running after stop or cancel."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal

import pytest
from conftest import process_alive, until
from latency_env import LatencyCartPole

from asynca3c import Config, EnvFault, Trainer
from asynca3c.errors import ConfigError, ShardError
from asynca3c.outputs import checkpoint


def shard_pids(trainer: Trainer) -> list[int]:
    assert trainer._run is not None
    return [s.pid for s in trainer._run.agents if s.pid is not None]


class FaultyLatencyCartPole(LatencyCartPole):
    """The 50th step of all instances in a process raises: one environment fault inside a shard."""

    steps = 0

    async def step(self, action):
        FaultyLatencyCartPole.steps += 1
        if FaultyLatencyCartPole.steps == 50:
            raise RuntimeError("the simulator lost its connection")
        return await super().step(action)


def test_two_shards_learn_cartpole_and_leave_nothing_running():
    async def main_():
        cfg = Config(shards=2, seconds=60, until_solved=True, final_eval_episodes=20, log_interval=0.5)
        async with Trainer(cfg) as trainer:
            pids = shard_pids(trainer)
            assert len(pids) == 2 and all(process_alive(p) for p in pids)
            ours = os.getpriority(os.PRIO_PROCESS, 0)
            assert all(os.getpriority(os.PRIO_PROCESS, p) == min(19, ours + cfg.shard_nice) for p in pids)
            assert await trainer.act([0.0, 0.0, 0.01, 0.0]) in (0, 1)  # from the trainer's own acting copy
            result = await trainer.wait()
        return result, pids

    result, pids = asyncio.run(main_())
    assert result.solved and result.eval_mean_return >= 400, result
    assert result.shard_restarts == 0
    assert not any(process_alive(p) for p in pids)


def test_a_killed_shard_is_restarted_counted_and_the_run_completes(tmp_path):
    async def main_():
        cfg = Config(shards=2, seconds=0, final_eval_episodes=0, log_interval=0.2)
        async with Trainer(cfg, run_dir=tmp_path / "r") as trainer:
            await asyncio.sleep(1.0)
            first = shard_pids(trainer)[0]
            os.kill(first, signal.SIGKILL)
            assert await until(lambda: trainer.snapshot()["shard_restarts"] == 1)
            assert await until(lambda: len(shard_pids(trainer)) == 2 and first not in shard_pids(trainer))
            steps = trainer.snapshot()["env_steps"]
            assert await until(lambda: trainer.snapshot()["env_steps"] > steps + 10_000)  # acting goes on
            pids = shard_pids(trainer)
            result = await trainer.stop()
        return result, pids

    result, pids = asyncio.run(main_())
    assert result.shard_restarts == 1 and result.stop_reason == "requested"
    assert checkpoint.load(tmp_path / "r")["counters"]["shard_restarts"] == 1
    assert not any(process_alive(p) for p in pids)


def test_a_silent_shard_is_killed_and_restarted():
    async def main_():
        cfg = Config(shards=1, agents=1, seconds=0, final_eval_episodes=0, shard_timeout=3.0, log_interval=0.2)
        async with Trainer(cfg) as trainer:
            await asyncio.sleep(0.5)
            (hung,) = shard_pids(trainer)
            os.kill(hung, signal.SIGSTOP)  # alive, but it says nothing any more
            assert await until(lambda: trainer.snapshot()["shard_restarts"] == 1, 20)
            assert await until(lambda: shard_pids(trainer) and shard_pids(trainer)[0] != hung)
            result = await trainer.stop()
        return result, hung

    result, hung = asyncio.run(main_())
    assert result.shard_restarts == 1
    assert not process_alive(hung)


def test_shards_that_keep_dying_stop_the_run_with_one_clear_error():
    async def main_():
        cfg = Config(shards=1, agents=1, seconds=0, final_eval_episodes=0, max_shard_restarts=1, log_interval=0.2)
        async with Trainer(cfg) as trainer:
            killed: set[int] = set()
            for _ in range(2):
                assert await until(lambda: bool(shard_pids(trainer)) and shard_pids(trainer)[0] not in killed)
                await asyncio.sleep(0.3)
                pid = shard_pids(trainer)[0]
                killed.add(pid)
                os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(30)
        return killed

    with pytest.raises(ShardError) as caught:
        asyncio.run(main_())
    text = str(caught.value)
    assert text.startswith("shard 0's process ") and "(signal 9, SIGKILL)" in text, text
    assert "lost 2 times within 10 minutes; stopped after 1 restarts (max_shard_restarts=1)" in text, text


def test_cancelling_the_host_leaves_no_shard_running(run_on):
    pids: list[int] = []

    async def host():
        async with Trainer(Config(shards=2, seconds=0, final_eval_episodes=0)) as trainer:
            pids.extend(shard_pids(trainer))
            await asyncio.sleep(30)

    async def main_():
        task = asyncio.ensure_future(host())
        assert await until(lambda: len(pids) == 2)
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run_on(main_())
    assert len(pids) == 2 and not any(process_alive(p) for p in pids)


def test_async_environments_run_on_shards_from_an_importable_factory():
    factory = functools.partial(LatencyCartPole, latency=0.001)
    cfg = Config(shards=2, agents=2, envs_per_agent=8, final_eval_episodes=5, log_interval=0.5)
    result = asyncio.run(Trainer(cfg, env_factory=factory).run(steps=8_000))
    assert result.env_steps >= 8_000 and result.updates > 0 and result.shard_restarts == 0


def test_an_env_factory_a_shard_cannot_import_is_refused_with_a_clear_error():
    cfg = Config(shards=1, agents=1)
    with pytest.raises(ConfigError, match=r"shards=1 needs an env_factory that pickles .*or use shards=0"):
        asyncio.run(Trainer(cfg, env_factory=lambda: LatencyCartPole()).run(seconds=5))


def test_an_env_fault_in_a_shard_stops_the_run_under_the_fail_policy():
    cfg = Config(shards=1, agents=1, envs_per_agent=2, env_faults="fail", final_eval_episodes=0)
    with pytest.raises(EnvFault, match="the simulator lost its connection"):
        asyncio.run(Trainer(cfg, env_factory=FaultyLatencyCartPole).run(seconds=30))


def test_an_env_fault_in_a_shard_is_survived_and_counted_under_the_restart_policy():
    cfg = Config(shards=1, agents=1, envs_per_agent=2, env_faults="restart", final_eval_episodes=0)
    result = asyncio.run(Trainer(cfg, env_factory=FaultyLatencyCartPole).run(steps=600))
    assert result.env_faults == 1 and result.env_steps >= 600


@pytest.mark.parametrize(("changes", "message"), [
    (dict(shards=3, agents=2), "shards=3 is not allowed: an integer in [0, agents] (2)"),
    (dict(shards=1, agents=1, deterministic=True), "shards=1 is not allowed: 0 with deterministic=True"),
    (dict(shards=1, novelty_bonus=0.1), "shards=1 is not allowed: 0 with novelty_bonus"),
    (dict(shards=-1), "shards=-1 is not allowed: an integer >= 0"),
    (dict(shard_timeout=0), "shard_timeout=0 is not allowed: a number > 0"),
])
def test_bad_shard_settings_are_refused(changes, message):
    with pytest.raises(ConfigError) as caught:
        Config(**changes)
    assert message in str(caught.value)


def test_the_command_trains_with_shards_and_resumes_with_them(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    done = run_cli("train", "--env", "CartPole-v1", "--shards", "1", "--agents", "1", "--envs-per-agent", "16",
                   "--final-eval-episodes", "2", "--quiet", "--run-dir", str(run_dir), "--seconds", "2")
    assert done.returncode == 0, done.stderr
    first = json.loads((run_dir / "summary.json").read_text())
    assert first["config"]["shards"] == 1 and first["env_steps"] > 0 and first["shard_restarts"] == 0
    done = run_cli("train", "--resume", str(run_dir), "--seconds", "4", "--quiet")  # the budget is the total
    assert done.returncode == 0, done.stderr
    second = json.loads((run_dir / "summary.json").read_text())
    assert second["env_steps"] > first["env_steps"] and second["updates"] > first["updates"]


def _main_module_factory():
    return LatencyCartPole()


_main_module_factory.__module__ = "__main__"  # as if defined in the host's script


def test_a_partial_of_a_main_module_factory_is_refused_with_a_clear_error():
    cfg = Config(shards=1, agents=1)
    factory = functools.partial(_main_module_factory)
    with pytest.raises(ConfigError, match=r"shards=1 cannot run an env_factory defined in __main__"):
        asyncio.run(Trainer(cfg, env_factory=factory).run(seconds=5))


def test_a_shard_resumes_its_share_of_the_steps_and_reports_only_new_ones():
    from asynca3c.core.envs import inspect_env
    from asynca3c.core.model import ActorCritic, describe_network
    from asynca3c.runtime.env_sources import GymEnvs
    from asynca3c.runtime.shard import Shard, ShardSpec

    spec = inspect_env("CartPole-v1", {})
    model = ActorCritic(spec.obs_dim, spec.n_actions, (8,), False, None)

    async def ship(message, report):
        raise AssertionError("not started")

    shard = Shard(ShardSpec(config=Config(shards=2, epsilon_start=(0.5,), epsilon_end=(0.0,),
                                          epsilon_steps=2_000).to_dict(),
                            source=GymEnvs("CartPole-v1"), env_spec=spec, network=describe_network(model),
                            weights=model.state_dict(), version=3, index=1, agents=[1], seeds=[5], eval_seed=None,
                            start_steps=700), ship)
    shard.agents = shard._make_agents()
    try:
        (agent,) = shard.agents
        assert shard.progress.env_steps == 700 and shard.predictor.version == 3
        assert agent.epsilon(shard.progress.env_steps) == pytest.approx(0.5 * (1 - 700 / 1_000))  # its share: 1,000
        shard.progress.env_steps += 40
        assert shard.take_report().env_steps == 40 and shard.take_report().env_steps == 0
    finally:
        asyncio.run(shard.aclose())


def test_a_shard_error_ends_the_command_with_status_1_and_one_line(monkeypatch, capsys):
    import types

    import asynca3c.cli as cli

    def fail(args):
        raise ShardError("shard 0's process died (signal 9, SIGKILL); shards were lost 4 times within 10 minutes")

    parsed = types.SimpleNamespace(run=fail)
    monkeypatch.setattr(cli, "build_parser", lambda: types.SimpleNamespace(parse_args=lambda argv: parsed))
    assert cli.main(["train"]) == 1  # a fault during the run, not bad input (2)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["asynca3c: error: shard 0's process died (signal 9, SIGKILL); shards were lost 4 times within "
                   "10 minutes"]


def test_shards_take_turns_at_a_full_queue():
    """Two shards whose next message is always ready: each gets half of the queue's places. With a bare
    ``Queue.put`` the first took 999 of 1,000 (a woken putter finds its place taken and goes to the back)."""
    import collections

    from asynca3c.runtime.shard_client import ShardClient

    async def main_():
        queue: asyncio.Queue = asyncio.Queue(2)
        turns = asyncio.Lock()
        clients = [ShardClient(i, None, queue=queue, progress=None, predictor=None, budget=None, timeout=1.0,
                               turns=turns) for i in range(2)]

        async def reader(client):
            while True:
                await asyncio.sleep(0)  # its next frame is already in the pipe
                await client._put(client.index)

        tasks = [asyncio.ensure_future(reader(c)) for c in clients]
        taken: collections.Counter = collections.Counter()
        for _ in range(1000):
            taken[await queue.get()] += 1
            await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return taken

    taken = asyncio.run(main_())
    assert min(taken[0], taken[1]) >= 450, taken
