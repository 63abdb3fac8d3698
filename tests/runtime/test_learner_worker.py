"""The learner worker's replies: the weights of the update they answer, shipped without an extra copy,
and none between the updates ``weights_every`` ships."""

from __future__ import annotations

import numpy as np
import torch
from conftest import make_random_segment

from asynca3c import Config
from asynca3c.core.learner import LearnerSpec
from asynca3c.core.model import ActorCritic
from asynca3c.runtime.learner_worker import answer


def started(**config):
    cfg = Config(env="CartPole-v1", segment_length=8, batch_envs=4, torch_threads=1, **config)
    learner, version = answer(None, "init", LearnerSpec.of(ActorCritic(4, 2, hidden=(16,)), cfg, torch.device("cpu")))
    return learner, version


def test_a_reply_carries_its_own_updates_weights_read_in_place():
    learner, version = started()
    before = [p.detach().clone() for p in learner.model.shipped()]
    learner, (stats, arrays) = answer(learner, "learn", (make_random_segment(8, 4), 1.0))
    shipped = [p.detach().numpy() for p in learner.model.shipped()]
    assert stats.version > version  # one version per gradient step
    assert len(arrays) == len(shipped) and all(np.array_equal(a, s) for a, s in zip(arrays, shipped, strict=True))
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(arrays, before, strict=True))  # it trained
    # read from the model itself: the reply is pickled or packed before the worker reads its next request
    assert all(np.shares_memory(a, s) for a, s in zip(arrays, shipped, strict=True))
    # a learner in this process (the thread learner) still gets copies it may hold across later steps
    learner.copy_weights = True
    assert not any(np.shares_memory(w.numpy(), s) for w, s in zip(learner.cpu_weights(), shipped, strict=True))


def test_weights_every_k_updates_only():
    learner, _ = started(weights_every=3)
    carried = []
    for i in range(6):
        learner, (_, arrays) = answer(learner, "learn", (make_random_segment(8, 4, seed=i), 1.0))
        carried.append(arrays is not None)
    assert carried == [False, False, True, False, False, True]
