"""A learner request that is still under way when the learner is closed: it fails with "closed", makes no
shared-memory segment, and starts no new worker process. One cancelled midway leaves no slot claimed and no
segment behind; a bigger batch grows the frames ring without pulling the old one from under a request."""

from __future__ import annotations

import asyncio
import os
import threading

import numpy as np
import pytest
import torch
from conftest import shm_segments, until

from asynca3c import Config
from asynca3c.core.learner import LearnerSpec
from asynca3c.core.messages import Segment
from asynca3c.core.model import ActorCritic
from asynca3c.errors import LearnerError
from asynca3c.runtime import learner_client, shm

pytestmark = pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="lists segments in /dev/shm (Linux)")


@pytest.fixture
def held_copy(monkeypatch):
    """Frames and weights go through shared memory, and copying a batch into its slot waits for the event."""
    monkeypatch.setattr(learner_client, "SHARED_FRAMES_MIN_BYTES", 0)
    monkeypatch.setattr(learner_client, "SHARED_WEIGHTS_MIN_BYTES", 0)
    release, copy = threading.Event(), np.copyto

    def held(*args, **kwargs):
        release.wait(10)
        return copy(*args, **kwargs)

    monkeypatch.setattr(np, "copyto", held)
    return release


def spec() -> LearnerSpec:
    model = ActorCritic(36 * 36, 3, encoder="a3c", obs_shape=(1, 36, 36))
    cfg = Config(env="CartPole-v1", encoder="a3c", segment_length=8, batch_envs=4, torch_threads=1)
    return LearnerSpec.of(model, cfg, torch.device("cpu"))


def batch(envs: int = 4) -> Segment:
    return Segment.empty(8, envs, (1, 36, 36), (), np.int64, obs_dtype=np.uint8)


@pytest.mark.parametrize("restarting", [False, True])
def test_a_request_under_way_at_close_fails_and_leaves_nothing(held_copy, restarting):
    restarts = []

    async def main():
        learner = (learner_client.RestartingLearner(spec(), 3, lambda: restarts.append(1)) if restarting
                   else learner_client.ProcessLearner(spec()))
        await learner.start()
        first = learner.pid
        request = asyncio.create_task(learner.learn(batch()))
        await asyncio.sleep(0.2)  # the request is copying its frames into a slot
        await learner.aclose()
        held_copy.set()
        with pytest.raises(LearnerError, match="the learner is closed"):
            await request
        await learner.aclose()
        return first, learner.pid

    before = shm_segments()
    first, last = asyncio.run(main())
    assert shm_segments() <= before  # neither ring outlived the close, and none was made after it
    assert restarts == [] and last == first  # no new worker was started for the late request


def test_rings_are_made_off_the_loop_once_and_a_close_meanwhile_leaves_none(monkeypatch):
    """Reserving a segment's pages held the loop for about 10 ms: rings are made in a thread, one request at
    a time (two requests share one ring), and a ring finished after the close is unlinked at once."""
    monkeypatch.setattr(learner_client, "SHARED_FRAMES_MIN_BYTES", 0)
    monkeypatch.setattr(learner_client, "SHARED_WEIGHTS_MIN_BYTES", 0)
    real, on_loop, hold = shm.SlotRing, [], threading.Event()
    hold.set()

    def made(*args, **kwargs):
        on_loop.append(threading.current_thread() is threading.main_thread())
        hold.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(shm, "SlotRing", made)

    async def main():
        learner = learner_client.ProcessLearner(spec())
        await learner.start()
        await asyncio.gather(learner.learn(batch()), learner.learn(batch()))
        rings = len(on_loop)
        await learner.aclose()

        hold.clear()
        learner = learner_client.ProcessLearner(spec())
        await learner.start()
        request = asyncio.create_task(learner.learn(batch()))
        await asyncio.sleep(0.2)  # its frames ring is being made
        await learner.aclose()
        hold.set()
        with pytest.raises(LearnerError, match="the learner is closed"):
            await request
        assert shm_segments() <= before  # the late ring went as it was made, not when collected
        return rings

    before = shm_segments()
    assert asyncio.run(main()) == 2  # frames and weights, shared by both requests
    assert on_loop == [False, False, False]  # the third: the late ring, closed once made
    assert shm_segments() <= before


def test_a_request_cancelled_while_its_ring_is_made_leaves_no_segment_and_the_learner_goes_on(monkeypatch):
    monkeypatch.setattr(learner_client, "SHARED_FRAMES_MIN_BYTES", 0)
    monkeypatch.setattr(learner_client, "SHARED_WEIGHTS_MIN_BYTES", 0)
    real, hold = shm.SlotRing, threading.Event()

    def made(*args, **kwargs):
        hold.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(shm, "SlotRing", made)
    before = shm_segments()

    async def main():
        learner = learner_client.ProcessLearner(spec())
        await learner.start()
        request = asyncio.create_task(learner.learn(batch()))
        await asyncio.sleep(0.2)  # its frames ring is being made in a thread, which a cancel does not stop
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        hold.set()
        assert await until(lambda: shm_segments() <= before, 10.0)  # unlinked once the thread had made it
        await learner.learn(batch())  # a new ring, and the learner answers
        assert learner.transport.inline_batches == 0
        await learner.aclose()

    asyncio.run(main())
    assert shm_segments() <= before


async def copying(learner: learner_client.ProcessLearner, segment: Segment) -> asyncio.Task:
    """A learn request under way, held in the copy of its frames into the one slot it has claimed."""
    request = asyncio.create_task(learner.learn(segment))
    assert await until(lambda: learner._frames is not None and learner._frames.in_use == 1, 10.0)
    return request


def test_a_request_cancelled_while_copying_its_frames_releases_its_slot_once_the_copy_ends(held_copy):
    async def main():
        learner = learner_client.ProcessLearner(spec())
        await learner.start()
        request = await copying(learner, batch())
        request.cancel()  # the copy goes on in its thread: the slot stays claimed until it ends
        with pytest.raises(asyncio.CancelledError):
            await request
        assert learner._frames.in_use == 1
        held_copy.set()
        assert await until(lambda: learner._frames.in_use == 0, 10.0)  # never sent: nothing holds it now
        for _ in range(4):  # more requests than slots: none was lost to the cancel
            await learner.learn(batch())
        assert learner.transport.inline_batches == 0
        await learner.aclose()

    before = shm_segments()
    asyncio.run(main())
    assert shm_segments() <= before


def test_a_bigger_batch_grows_the_frames_ring_and_the_old_one_goes_when_its_last_slot_is_released(held_copy):
    async def main():
        learner = learner_client.ProcessLearner(spec())
        await learner.start()
        small = await copying(learner, batch(4))
        old = learner._frames.name
        big = asyncio.create_task(learner.learn(batch(16)))  # 4x the frames: its slot needs a new ring
        assert await until(lambda: learner._frames.name != old, 10.0)
        assert {old, learner._frames.name} <= shm_segments()  # the old one stays: the small request's slot is in it
        held_copy.set()
        await asyncio.gather(small, big)
        assert old not in shm_segments() and learner._frames.name in shm_segments()
        assert learner._frames.slot_bytes >= batch(16).obs.nbytes and learner.transport.inline_batches == 0
        await learner.aclose()

    before = shm_segments()
    asyncio.run(main())
    assert shm_segments() <= before
