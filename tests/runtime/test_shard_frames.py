"""Pixel segments from process shards, and the weights to them, cross through the trainer's shared memory,
not the pipes: slots are written, read, released and reused, a full grant holds its shard back, a killed
shard's replacement writes into the same slots, and nothing is left in /dev/shm."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal

import numpy as np
import pytest
from conftest import process_alive, shm_segments, until
from pixel_env import ENV_ID

from asynca3c import Config, Trainer
from asynca3c.runtime import shard_frames, shard_weights, shm
from asynca3c.runtime.shard_frames import FrameRing, FrameWriter
from asynca3c.runtime.shard_weights import WeightsBoard, copy_out

#: the gymnasium id with its module, so a shard process imports (and so registers) the task too
PIXEL_ENV = f"pixel_env:{ENV_ID}"
PIXELS = dict(env=PIXEL_ENV, encoder="a3c", shards=2, agents=2, envs_per_agent=8, segment_length=8, batch_envs=16,
              reward_scale=1.0, lr=0.001, solve_window=50, log_interval=0.5)
SEGMENT_BYTES = 9 * 8 * 42 * 42  # (segment_length + 1) rows of envs_per_agent 42x42 frames


@pytest.fixture
def small_frames_too(monkeypatch):
    """The task's segments (100 kB) and weights are small; a game's are megabytes. Put these through shared
    memory too."""
    monkeypatch.setattr(shard_frames, "MIN_BYTES", 0)
    monkeypatch.setattr(shard_weights, "MIN_BYTES", 0)


def test_a_writer_waits_for_a_release_when_its_slots_are_claimed():
    async def main():
        ring = FrameRing(shards=2, slot_bytes=64, slots_per_shard=2)
        writer = FrameWriter(ring.grant(1))
        try:
            frames = [np.full(64, i, np.uint8) for i in range(3)]
            first, second = await writer.put(frames[0]), await writer.put(frames[1])
            assert first is not None and second is not None and {first.slot, second.slot} == {2, 3}  # its own
            third = asyncio.ensure_future(writer.put(frames[2]))
            await asyncio.sleep(0.05)
            assert not third.done()  # both of its slots are claimed: it waits
            assert (ring.take(first) == 0).all()
            writer.release(first.slot)
            ref = await asyncio.wait_for(third, 1.0)
            assert ref.slot == first.slot and (ring.take(ref) == 2).all()  # the released slot, reused
            assert (ring.take(second) == 1).all() and ring.segments == 3 and ring.bytes == 3 * 64
            assert ring.segments_by_shard == [0, 3]

            waiting = asyncio.ensure_future(writer.put(frames[0]))
            await asyncio.sleep(0.05)
            writer.stop_waiting()  # the trainer is gone: nothing will be released
            assert await asyncio.wait_for(waiting, 1.0) is None
            assert await writer.put(np.zeros(65, np.uint8)) is None  # too big for a slot: by pipe
            assert writer.inline == 2
        finally:
            writer.close()
            ring.close()

    before = shm_segments()
    asyncio.run(main())
    assert shm_segments() <= before


def test_small_frames_or_no_shared_memory_mean_the_pipe(monkeypatch, caplog):
    assert FrameRing.for_shards(2, shard_frames.MIN_BYTES - 1) is None
    assert FrameRing.for_shards(0, shard_frames.MIN_BYTES) is None

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shm, "SlotRing", full)
    monkeypatch.setattr(shm, "_warned_of", set())
    with caplog.at_level(logging.WARNING, "asynca3c"):
        assert FrameRing.for_shards(2, shard_frames.MIN_BYTES) is None
        assert FrameRing.for_shards(2, shard_frames.MIN_BYTES) is None
    assert caplog.text.count("no shared-memory segment could be made for the shards' frames") == 1


def shard_pids(trainer: Trainer) -> list[int]:
    return [s.pid for s in trainer._run.agents if s.pid is not None]


def test_shards_ship_pixel_segments_through_shared_memory_and_the_cnn_learns(small_frames_too):
    before = shm_segments()

    async def main():
        trainer = Trainer(Config(**PIXELS, seconds=60, until_solved=True, final_eval_episodes=20))
        result = await trainer.run()
        run = trainer._run
        return result, run.shard_frames, run.shard_weights, [shard.pipe_weight_sends for shard in run.agents]

    result, frames, board, pipe_weight_sends = asyncio.run(main())
    assert board is not None and board.published > 0 and board.sent >= board.published
    assert pipe_weight_sends == [0, 0]  # every version went through the board, none pickled through a pipe
    assert board.in_use <= 1  # every slot sent was answered for; at most the newest version is kept
    assert result.solved and result.eval_mean_return >= 7.0, result  # guessing scores 5
    assert frames is not None and frames.segments > 0
    assert frames.bytes == frames.segments * SEGMENT_BYTES  # every segment's frames came through a slot
    # each of the 2 + 1 agents' segments holds envs_per_agent x segment_length steps; most came by the ring
    assert frames.segments * 8 * 8 >= 0.9 * result.env_steps - 3 * 8 * 8 * 2, (frames.segments, result.env_steps)
    low, high = sorted(frames.segments_by_shard)
    # the shards take turns at the queue: neither starves (a bare put gave one of them about none for 20 s
    # at a time); 0.4 failed once while a benchmark held both cores and the OS, not the queue, picked
    assert low >= 0.25 * high, frames.segments_by_shard
    assert shm_segments() <= before  # the ring was unlinked


def test_a_killed_shard_is_replaced_and_its_successor_writes_into_the_same_slots(small_frames_too):
    before = shm_segments()

    async def main():
        async with Trainer(Config(**PIXELS, seconds=0, final_eval_episodes=0)) as trainer:
            frames = trainer._run.shard_frames
            assert await until(lambda: frames.segments >= 10)
            assert shm_segments() - before  # the ring exists while training
            first = shard_pids(trainer)[0]
            os.kill(first, signal.SIGKILL)
            assert await until(lambda: trainer.snapshot()["shard_restarts"] == 1)
            assert await until(lambda: len(shard_pids(trainer)) == 2 and first not in shard_pids(trainer))
            read = frames.segments_by_shard[0]
            # more of shard 0's segments than its grant holds: the successor's slots are released and reused
            assert await until(lambda: frames.segments_by_shard[0] > read + 2 * shard_frames.SLOTS_PER_SHARD)
            pids = shard_pids(trainer)
            result = await trainer.stop()
            board = trainer._run.shard_weights
        return result, pids, board

    result, pids, board = asyncio.run(main())
    assert result.shard_restarts == 1 and result.updates > 0
    assert board.in_use <= 1  # what the killed shard never answered for was let go
    assert not any(process_alive(p) for p in pids)
    assert shm_segments() <= before


def test_a_board_slot_is_reused_once_every_shard_read_it_and_a_newer_version_replaced_it():
    def main():
        board = WeightsBoard(shards=1, slot_bytes=1024)  # 3 slots
        try:
            weights = [np.arange(10, dtype=np.float32), np.ones((4, 4), np.float32)]
            first = board.publish(1, weights)
            assert board.publish(1, weights) is first  # one write per version, for every shard
            assert [a.tolist() for a in copy_out(first)] == [w.tolist() for w in weights]
            board.sent_to_one(first)
            second = board.publish(2, [w + 1 for w in weights])
            assert board.in_use == 2  # the first is still unread by the shard it went to
            board.sent_to_one(second)
            third = board.publish(3, weights)
            assert board.in_use == 3 and board.publish(4, weights) is None  # all held (the client never
            # gets here: it sends a shard nothing new while MAX_UNREAD are unanswered)
            board.read(first.ref.slot)  # read, and replaced by newer versions: free
            fourth = board.publish(4, weights)
            assert fourth is not None and fourth.ref.slot == first.ref.slot
            assert board.in_use == 2  # the 2nd (unread) and the 4th; the 3rd, never sent, was freed by the 4th
            board.read(second.ref.slot)
            assert board.in_use == 1  # only the newest is kept
            assert third is not None and board.published == 4 and board.sent == 2
        finally:
            board.close()

    before = shm_segments()
    main()
    assert shm_segments() <= before


def test_a_shard_is_sent_no_new_weights_while_it_has_not_answered_for_two():
    """A shard slow to answer (or hung) holds back only its own weights: with MAX_UNREAD slots each, the
    board never runs out of slots for the others."""
    from asynca3c.runtime.shard_client import ProcessShard

    async def main():
        shard = ProcessShard(0, None, queue=asyncio.Queue(1), progress=None, predictor=None, budget=None,
                             timeout=1.0)
        shard._unread = [3, 4]  # two versions sent, neither answered for
        ready = asyncio.ensure_future(shard._ready_for_weights())
        await asyncio.sleep(0.05)
        assert not ready.done()
        shard._unread.remove(3)  # what reading its answer does
        shard._answered.set()
        await asyncio.wait_for(ready, 1.0)

    asyncio.run(main())
    assert shard_weights.MAX_UNREAD == 2


def test_a_shard_that_cannot_follow_its_parent_stops_with_the_error_instead_of_hanging(small_frames_too):
    """A failure in the shard's control task (here: a release of a slot it never had) ends the run with that
    error; before, the task died silently and agents waiting for a slot waited forever."""
    async def main():
        async with Trainer(Config(**PIXELS, seconds=0, final_eval_episodes=0)) as trainer:
            frames = trainer._run.shard_frames
            assert await until(lambda: frames.segments >= 4)
            trainer._run.agents[1]._send(("release", 10**6))
            await asyncio.wait_for(trainer.wait(), 60)

    with pytest.raises(Exception, match="slot 1000000") as caught:
        asyncio.run(main())
    assert "shard" in "".join(getattr(caught.value, "__notes__", [])) + str(caught.value)
