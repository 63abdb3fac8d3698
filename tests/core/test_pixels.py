"""Image observations: how they are recognised, kept uint8, and turned into features by a CNN."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from asynca3c import Config
from asynca3c.config import ENCODER_NAMES
from asynca3c.core.envs import EnvSpec, ObsEncoder, describe_env, image_layout
from asynca3c.core.messages import Segment
from asynca3c.core.model import ENCODERS, ActorCritic, build_network, describe_network
from asynca3c.core.rewards import TrainingReward
from asynca3c.errors import ConfigError


def box(shape, dtype=np.uint8):
    return gym.spaces.Box(0, 255 if dtype == np.uint8 else 1, shape, dtype)


@pytest.mark.parametrize(("shape", "expected"), [
    ((84, 84), ((1, 84, 84), False)),
    ((210, 160, 3), ((3, 210, 160), True)),
    ((42, 42, 1), ((1, 42, 42), True)),
    ((4, 84, 84), ((4, 84, 84), False)),
    ((3, 64, 64), ((3, 64, 64), False)),
])
def test_uint8_boxes_of_two_or_three_axes_are_images(shape, expected):
    assert image_layout(box(shape)) == expected


@pytest.mark.parametrize("space", [box((84, 84), np.float32), box((4,)), box((2, 3, 4, 5)),
                                   gym.spaces.Discrete(3)])
def test_other_spaces_are_not_images(space):
    assert image_layout(space) is None


def test_the_encoder_keeps_frames_uint8_and_moves_channels_first():
    env = gym.make("CartPole-v1")
    env.observation_space = box((6, 5, 3))
    spec = describe_env(env, "rgb")
    env.close()
    assert (spec.obs_kind, spec.obs_shape, spec.channels_last, spec.obs_dim) == ("image", (3, 6, 5), True, 90)
    frames = np.random.default_rng(0).integers(0, 256, (2, 6, 5, 3), dtype=np.uint8)
    out = ObsEncoder(spec)(frames)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 6, 5) and out.flags.c_contiguous
    np.testing.assert_array_equal(out[1, 2], frames[1, :, :, 2])
    with pytest.raises(TypeError, match="float32 where uint8"):
        ObsEncoder(spec)(frames.astype(np.float32))


def test_config_and_model_name_the_same_encoders():
    assert set(ENCODER_NAMES) == {"auto", *ENCODERS}
    with pytest.raises(ConfigError, match="encoder='resnet' is not allowed: auto, mlp, nature, a3c"):
        Config(encoder="resnet")


@pytest.mark.parametrize(("encoder", "features"), [("nature", 512), ("a3c", 256)])
def test_cnns_scale_pixels_inside_and_give_their_feature_width(encoder, features):
    torch.manual_seed(0)
    model = ActorCritic(4 * 84 * 84, 6, encoder=encoder, obs_shape=(4, 84, 84))
    frames = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    out, values = model(frames)
    assert out.shape == (3, 6) and values.shape == (3,)
    assert model.policy.in_features == features
    # the same images as floats in [0, 1] through the body give the same features: scaling is inside
    torch.testing.assert_close(model.body(model._inputs(frames)), model.body(frames.float() / 255))
    # segments [L, E, C, H, W] unroll to the same outputs as one batch
    unrolled, unrolled_values = model.unroll(frames.reshape(3, 1, 4, 84, 84), None, None)
    torch.testing.assert_close(unrolled, out)
    torch.testing.assert_close(unrolled_values, values)


def test_cnn_initialization_is_orthogonal_with_small_policy_and_unit_value_gains():
    model = ActorCritic(1 * 42 * 42, 3, encoder="a3c", obs_shape=(1, 42, 42))
    w = model.policy.weight.detach()
    torch.testing.assert_close(w @ w.T, 0.01 ** 2 * torch.eye(3), atol=1e-7, rtol=1e-4)
    v = model.value.weight.detach()
    torch.testing.assert_close(v @ v.T, torch.eye(1))
    assert all(float(layer.bias.detach().abs().max()) == 0 for layer in model.body if hasattr(layer, "bias"))


def test_a_cnn_refuses_images_too_small_and_settings_it_does_not_use():
    with pytest.raises(ValueError, match=r"images of shape \(1, 20, 20\) are too small for the 'nature' CNN"):
        ActorCritic(400, 2, encoder="nature", obs_shape=(1, 20, 20))
    with pytest.raises(ValueError, match="needs obs_shape"):
        ActorCritic(400, 2, encoder="a3c", obs_shape=(400,))
    with pytest.raises(ValueError, match="scales pixels"):
        ActorCritic(1764, 2, encoder="a3c", obs_shape=(1, 42, 42), running_norm=True)


def test_describe_and_build_round_trip_a_cnn_with_a_recurrent_core():
    model = ActorCritic(4 * 84 * 84, 4, encoder="a3c", obs_shape=(4, 84, 84), core="lstm", core_size=32)
    net = describe_network(model)
    assert net["encoder"] == "a3c" and net["obs_shape"] == [4, 84, 84]
    rebuilt = build_network(net)
    rebuilt.load_state_dict(model.state_dict())
    frames = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    torch.testing.assert_close(rebuilt.step(frames, None)[0], model.step(frames, None)[0])
    older = {k: v for k, v in net.items() if k not in ("encoder", "obs_shape")}  # an MLP checkpoint's entry
    assert build_network({**older, "obs_dim": 4, "core": ""}).encoder == "mlp"


def test_segments_of_images_stay_uint8():
    seg = Segment.empty(5, 3, (4, 84, 84), (), np.int64, obs_dtype=np.uint8)
    assert seg.obs.shape == (6, 3, 4, 84, 84) and seg.obs.dtype == np.uint8
    assert Segment.concat([seg, seg.columns(0, 1)]).obs.dtype == np.uint8
    assert Segment.empty(5, 3, 4, (), np.int64).obs.shape == (6, 3, 4)  # rows of a width, as before


def test_training_rewards_are_clipped_before_scaling_and_reported_ones_are_not_touched():
    raw = np.array([-7.0, 0.5, 4.0])
    np.testing.assert_allclose(TrainingReward(0.5, None, clip=1.0)(raw, np.zeros((3, 1))), [-0.5, 0.25, 0.5])
    np.testing.assert_allclose(TrainingReward(1.0)(raw, np.zeros((3, 1))), raw)
    assert raw.tolist() == [-7.0, 0.5, 4.0]
    with pytest.raises(ConfigError, match="reward_clip=-1 is not allowed"):
        Config(reward_clip=-1)


def test_novelty_needs_a_box_not_images():
    from asynca3c.core.rewards import NoveltyBonus
    spec = EnvSpec("pixels", 1764, 2, "image", None, obs_shape=(1, 42, 42))
    with pytest.raises(ConfigError, match="are images of shape"):
        NoveltyBonus.for_spec(spec, 4, 0.1)


@pytest.mark.parametrize("core", ["", "lstm"])
def test_one_pass_learning_forwards_once_and_steps_as_the_two_pass_update_does(random_segment, monkeypatch, core):
    """epochs = minibatches = 1 trains on the forward pass that gave the targets; the update must equal the
    general path's (a no-grad pass for targets, then a second pass to train)."""
    from asynca3c.core.learner import Learner
    seg = random_segment(6, 5)
    seg.state0 = np.zeros((1, 5, 16 if core else 0), np.float32)
    results = []
    for one_pass in (True, False):
        torch.manual_seed(0)
        model = ActorCritic(4, 2, (8,), core=core, core_size=8)
        learner = Learner(model, Config(epochs=1, minibatches=1, recurrent=core), torch.device("cpu"))
        monkeypatch.setattr(learner, "one_pass", lambda one_pass=one_pass: one_pass)
        stats, weights = learner.learn(seg)
        results.append((stats, weights))
    (fast, fast_w), (slow, slow_w) = results
    assert fast.steps == slow.steps == 1 and fast.batch_size == slow.batch_size
    for a, b in zip(fast_w, slow_w):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert fast.policy_loss == pytest.approx(slow.policy_loss, rel=1e-5, abs=1e-7)
