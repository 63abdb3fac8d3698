"""Acting shards as Ray actors: they learn on a local Ray instance, a killed actor is restarted, and on a
two-node cluster simulated on this machine the shards run one on each node.

Marked ``ray``: ``pytest -m 'not ray'`` skips them for a quick local run; CI runs them (its test command
installs ray). Skipped with the reason when ray is not installed.
"""

from __future__ import annotations

import asyncio

import pytest
from conftest import until

from asynca3c import Config, Trainer
from asynca3c.errors import ConfigError

ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'asynca3c[ray]' (CI installs it)")

pytestmark = pytest.mark.ray


@pytest.fixture
def local_ray():
    """A local Ray instance of 2 CPUs for one test, shut down after it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture
def two_node_cluster():
    """Two Ray nodes of 1 CPU each on this machine (Ray's own way to simulate a cluster), torn down after."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def shards_of(trainer: Trainer) -> list:
    assert trainer._run is not None
    return list(trainer._run.agents)


def test_two_shard_actors_learn_and_a_killed_actor_is_restarted(local_ray):
    async def main_():
        cfg = Config(shards=2, ray=True, seconds=0, final_eval_episodes=20, log_interval=1.0)
        async with Trainer(cfg) as trainer:
            shards = shards_of(trainer)
            assert [type(s).__name__ for s in shards] == ["RayShard", "RayShard"]
            assert await until(lambda: trainer.snapshot()["env_steps"] > 5_000)
            first = shards[0].pid
            local_ray.kill(shards[0]._actor, no_restart=True)
            assert await until(lambda: trainer.snapshot()["shard_restarts"] == 1, 60)
            assert await until(lambda: shards[0].pid is not None and shards[0].pid != first, 60)
            assert await until(lambda: trainer.snapshot()["solved"], 90)
            return await trainer.stop()

    result = asyncio.run(main_())
    assert result.shard_restarts == 1
    assert result.solved and result.eval_mean_return >= 400, result


def test_on_a_two_node_cluster_the_shards_run_one_on_each_node(two_node_cluster):
    async def main_():
        cfg = Config(shards=2, ray=True, ray_cpus_per_shard=1.0, seconds=0, final_eval_episodes=0, log_interval=1.0)
        async with Trainer(cfg) as trainer:
            nodes = {s.node for s in shards_of(trainer)}
            assert await until(lambda: trainer.snapshot()["updates"] > 20)
            return nodes, await trainer.stop()

    nodes, result = asyncio.run(main_())
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 2 and nodes <= alive
    assert result.env_steps > 0 and result.shard_restarts == 0


def test_ray_needs_shards():
    with pytest.raises(ConfigError, match=r"ray=True is not allowed: True only with shards >= 1"):
        Config(ray=True)


def test_the_learner_as_a_ray_actor_trains_and_is_restarted_when_killed(local_ray):
    async def main_():
        # weights_every 2: every other reply from the actor carries no weights
        cfg = Config(shards=2, ray=True, ray_cpus_per_shard=0.5, learner="ray", seconds=0, final_eval_episodes=0,
                     log_interval=0.5, weights_every=2)
        async with Trainer(cfg) as trainer:
            assert type(trainer.learner._worker).__name__ == "RayLearnerWorker"
            assert await until(lambda: trainer.snapshot()["updates"] > 10)
            local_ray.kill(trainer.learner._worker._actor, no_restart=True)
            assert await until(lambda: trainer.snapshot()["learner_restarts"] == 1, 60)
            updates = trainer.snapshot()["updates"]
            assert await until(lambda: trainer.snapshot()["updates"] > updates + 10)  # the new actor trains
            return await trainer.stop()

    result = asyncio.run(main_())
    assert result.learner_restarts == 1 and result.updates > 20
