"""A value head with hidden layers of its own (``separate_value``): gradients kept apart, learning, checkpoints."""

from __future__ import annotations

import asyncio

import pytest
import torch

from asynca3c import Config, Trainer, train
from asynca3c.config import ConfigError
from asynca3c.core.model import ActorCritic, build_network, describe_network
from asynca3c.outputs.checkpoint import CheckpointError, load_policy


def _grads(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize("continuous", [False, True])
def test_the_value_loss_reaches_only_the_value_layers_and_the_policy_loss_only_the_policy_layers(continuous):
    torch.manual_seed(0)
    model = ActorCritic(6, 3, (16, 16), continuous=continuous, separate_value=True)
    obs = torch.randn(32, 6)
    _, values = model(obs)
    values.pow(2).mean().backward()
    assert _grads(model.value_body) > 0 and _grads(model.value) > 0
    assert _grads(model.body) == 0 and _grads(model.policy) == 0
    model.zero_grad(set_to_none=True)
    out, _ = model(obs)
    out.pow(2).mean().backward()
    assert _grads(model.body) > 0 and _grads(model.policy) > 0
    assert _grads(model.value_body) == 0 and _grads(model.value) == 0


def test_a_shared_network_is_unchanged_and_its_value_loss_shapes_the_shared_layers():
    torch.manual_seed(0)
    shared = ActorCritic(6, 3, (16,))
    assert shared.value_body is None and not describe_network(shared)["separate_value"]
    _, values = shared(torch.randn(8, 6))
    values.sum().backward()
    assert _grads(shared.body) > 0


def test_unroll_and_step_give_the_forward_pass_of_a_separate_value_network():
    torch.manual_seed(1)
    model = ActorCritic(4, 2, (8,), separate_value=True)
    obs = torch.randn(5, 3, 4)
    out, values = model.unroll(obs, None, None)
    ref_out, ref_values = model(obs.reshape(15, 4))
    step_out, step_values, state = model.step(obs.reshape(15, 4), None)
    assert state is None
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(values, ref_values)
    torch.testing.assert_close(step_values, ref_values)
    torch.testing.assert_close(step_out, ref_out)


def test_the_description_rebuilds_it_and_an_older_description_means_shared():
    model = ActorCritic(4, 2, (8,), separate_value=True)
    rebuilt = build_network(describe_network(model))
    assert rebuilt.value_body is not None
    rebuilt.load_state_dict(model.state_dict())
    older = {k: v for k, v in describe_network(model).items() if k != "separate_value"}
    assert build_network(older).value_body is None


def test_it_is_refused_where_there_are_no_hidden_layers_of_its_own_to_give():
    with pytest.raises(ConfigError, match="separate_value=True is not allowed: False with recurrent='lstm'"):
        Config(separate_value=True, recurrent="lstm")
    with pytest.raises(ValueError, match="separate_value needs a feed-forward MLP, not encoder 'nature'"):
        ActorCritic(4 * 84 * 84, 6, separate_value=True, encoder="nature", obs_shape=(4, 84, 84))
    from pixel_env import register
    with pytest.raises(ConfigError, match="encoder='a3c': separate_value needs a feed-forward MLP, not encoder 'a3c'"):
        train(Config(env=register(), encoder="a3c", separate_value=True, seconds=0.5))


SMALL = dict(env="CartPole-v1", deterministic=True, agents=1, envs_per_agent=16, eval_envs=0, batch_envs=16,
             segment_length=16, seconds=0, steps=40_000, hidden=(32,), final_eval_episodes=20, log_interval=0.5,
             device="cpu", seed=3, separate_value=True)


def test_a_run_learns_and_saves_a_network_that_eval_and_resume_rebuild(tmp_path):
    result = train(Config(**SMALL), run_dir=tmp_path)
    assert result.eval_mean_return >= 150, result.eval_mean_return  # a random policy: about 22
    model, env_id, _ = load_policy(tmp_path)
    assert env_id == "CartPole-v1" and model.value_body is not None
    with pytest.raises(CheckpointError, match="separate_value: checkpoint True, this run False"):
        asyncio.run(Trainer(Config(**{**SMALL, "separate_value": False}), resume_from=tmp_path).run())


def test_a_network_entry_with_a_separate_value_and_a_cnn_or_a_core_is_refused():
    from asynca3c.outputs import checkpoint
    base = {"env": "X-v0", "obs_dim": 4, "n_actions": 2, "hidden": [8], "separate_value": True}
    checkpoint._check_network(base)  # an MLP: fine
    for bad in ({"core": "lstm", "core_size": 8}, {"encoder": "nature", "obs_dim": 4 * 84 * 84,
                                                   "obs_shape": [4, 84, 84]}):
        with pytest.raises(checkpoint._Invalid, match="separate_value must be false with a CNN encoder or a "
                                                      "recurrent core"):
            checkpoint._check_network({**base, **bad})
