"""Shared-memory slots: round trips in and across processes, slot reuse, and who unlinks a segment when
an attacher or the owner exits, crashes or is killed (only the owner, or the owner's resource tracker)."""

from __future__ import annotations

import hashlib
import pickle
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from conftest import shm_segments

from asynca3c.runtime import shm

SHM_DIR = Path("/dev/shm")
pytestmark = pytest.mark.skipif(not SHM_DIR.is_dir(), reason="lists segments in /dev/shm (Linux)")

# what a child process starts with: argv[1] is a pickled SlotRef (or WriterGrant) in hex
PRELUDE = """
import hashlib, os, pickle, signal, sys, time
import numpy as np
from asynca3c.runtime import shm
arg = pickle.loads(bytes.fromhex(sys.argv[1]))
"""


def hexpickle(obj: object) -> str:
    return pickle.dumps(obj).hex()


# Children run with -W default: every warning is printed (and a test asserts stderr is empty). Not -W error:
# the flag reaches a resource tracker the child starts, and there turns the "leaked shared_memory" warning
# into an exception that the tracker swallows, which would hide the very leak we look for.


def child(code: str, arg: object, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-W", "default", "-c", PRELUDE + code, hexpickle(arg)],
                          capture_output=True, text=True, timeout=timeout)


def popen(code: str, arg: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-W", "default", "-c", PRELUDE + code, hexpickle(arg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def gone_within(name: str, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while (SHM_DIR / name).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return not (SHM_DIR / name).exists()


@pytest.fixture(autouse=True)
def leaves_nothing():
    """Every test unmaps its attachments and leaves no segment of its own behind."""
    before = shm_segments()
    yield
    shm.detach_all()
    assert shm_segments() <= before


ARRAYS = {
    "uint8 obs batch": lambda rng: rng.integers(0, 256, size=(21, 16, 4, 84, 84), dtype=np.uint8),
    "float32 weights": lambda rng: rng.normal(size=(257, 513)).astype(np.float32),
    "float64 scalar": lambda rng: np.array(3.5),
    "bool": lambda rng: rng.integers(0, 2, size=(7, 3)).astype(bool),
    "int16 transposed": lambda rng: np.arange(24, dtype=np.int16).reshape(4, 6).T,  # not C-contiguous
    "empty": lambda rng: np.zeros((0, 5), np.float32),
}


@pytest.mark.parametrize("kind", list(ARRAYS))
def test_round_trip_in_process(kind):
    array = ARRAYS[kind](np.random.default_rng(0))
    with shm.SlotRing(2, 21 * 16 * 4 * 84 * 84) as ring:
        ref = pickle.loads(pickle.dumps(ring.put(array)))
        assert isinstance(ref, shm.SlotRef) and ref.shape == array.shape and np.dtype(ref.dtype) == array.dtype
        seen = shm.view(ref)
        np.testing.assert_array_equal(seen, array)
        assert seen.dtype == array.dtype and seen.flags.c_contiguous
        if array.size:  # in place: a write through one mapping shows through the other
            seen.flat[0] = seen.flat[-1]
            assert ring.view(ref).flat[0] == array.flat[-1]
        assert shm.attach(ref.name) is shm.attach(ref.name)  # one mapping per process


def test_round_trip_through_a_subprocess():
    rng = np.random.default_rng(1)
    obs = rng.integers(0, 256, size=(21, 16, 4, 84, 84), dtype=np.uint8)
    weights = rng.normal(size=(1000, 700)).astype(np.float32)
    with shm.SlotRing(3, obs.nbytes) as ring:
        refs = [ring.put(obs), ring.put(weights)]
        done = child("""
from multiprocessing import resource_tracker
for ref in arg:
    v = shm.view(ref)
    print(hashlib.sha256(v).hexdigest())
    v.flat[:3] = 7  # the reply: written in place
assert getattr(resource_tracker._resource_tracker, "_pid", None) is None  # attaching started no tracker
""", refs)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        assert done.stdout.split() == [hashlib.sha256(obs).hexdigest(), hashlib.sha256(weights).hexdigest()]
        for ref, sent in zip(refs, (obs, weights)):
            back = ring.view(ref)
            assert (back.flat[:3] == 7).all()
            np.testing.assert_array_equal(back.flat[3:], sent.flat[3:])


def test_a_worker_packs_arrays_into_a_slot_the_owner_names_and_the_owner_copies_them_out():
    """The learner's reply path: the worker writes the weights into a flat slot, the pipe carries only the
    small Packed layout, and the owner copies every array out exactly (dtypes, shapes, order kept)."""
    rng = np.random.default_rng(2)
    arrays = [ARRAYS[k](rng) for k in ("float32 weights", "float64 scalar", "bool", "int16 transposed", "empty")]
    with shm.SlotRing(2, sum(a.nbytes for a in arrays) + shm.ALIGN * len(arrays)) as ring:
        ref = shm.flat_ref(ring.name, 1, ring.slot_bytes)
        done = child("""
rng = np.random.default_rng(2)
arrays = [rng.normal(size=(257, 513)).astype(np.float32), np.array(3.5),
          rng.integers(0, 2, size=(7, 3)).astype(bool), np.arange(24, dtype=np.int16).reshape(4, 6).T,
          np.zeros((0, 5), np.float32)]
print(pickle.dumps(shm.pack_into(arg, arrays)).hex())
""", ref)
        assert done.returncode == 0 and done.stderr == "", done.stderr
        packed = pickle.loads(bytes.fromhex(done.stdout.strip()))
        assert packed.ref == ref and packed.nbytes == sum(a.nbytes for a in arrays)
        assert all(at % shm.ALIGN == 0 for at, _, _ in packed.parts)
        back = shm.unpack_copy(ring.view(ref), packed)
        ring.view(ref)[:] = 0  # copies: the slot can be reused at once
        for got, sent in zip(back, arrays, strict=True):
            assert got.dtype == sent.dtype and got.shape == sent.shape
            np.testing.assert_array_equal(got, sent)


def test_arrays_that_do_not_fit_a_slot_are_refused_by_the_packer():
    with shm.SlotRing(1, 1000) as ring:
        ref = shm.flat_ref(ring.name, 0, ring.slot_bytes)
        with pytest.raises(ValueError, match="do not fit the 1024-byte slot 0 .*448 bytes are used"):
            shm.pack_into(ref, [np.zeros(100, np.float32), np.zeros(200, np.float32)])  # 400 (+48) + 800 bytes
        with pytest.raises(ValueError, match="array of 4000 bytes .* does not fit a 1024-byte slot"):
            shm.pack_into(ref, [np.zeros(1000, np.float32)])
        shm.detach_all()


def test_slots_are_reused():
    before = shm_segments()
    ring = shm.SlotRing(3, 1000)
    try:
        assert shm_segments() == before | {ring.name}
        pending: deque[shm.SlotRef] = deque()
        used = set()
        for i in range(10_000):
            ref = ring.put(np.full(250, i, np.int32))
            assert ref is not None
            used.add(ref.slot)
            pending.append(ref)
            if len(pending) == 2:  # two in flight at a time, like a pipelined trainer
                done = pending.popleft()
                assert ring.view(done)[0] == i - 1
                ring.release(done.slot)
        assert used == {0, 1, 2}
        assert shm_segments() == before | {ring.name}
    finally:
        ring.close()
    assert shm_segments() == before


def test_a_full_ring_puts_nothing_until_a_release():
    with shm.SlotRing(2, 64) as ring:
        a, b = ring.put(np.ones(8)), ring.put(np.ones(8))
        assert a is not None and b is not None and {a.slot, b.slot} == {0, 1}
        assert ring.put(np.ones(8)) is None
        assert ring.claim() is None and ring.in_use == 2
        ring.release(b.slot)
        c = ring.put(np.zeros(8))
        assert c is not None and c.slot == b.slot
        ring.release(a.slot)
        with pytest.raises(ValueError, match="already free"):
            ring.release(a.slot)
        with pytest.raises(ValueError, match="not one of"):
            ring.release(5)


def test_too_big_or_unplain_arrays_are_refused():
    with shm.SlotRing(2, 100) as ring:
        assert ring.slot_bytes == 128  # rounded up to ALIGN
        with pytest.raises(ValueError, match=r"array of 200 bytes .* does not fit a 128-byte slot"):
            ring.put(np.zeros(200, np.uint8))
        with pytest.raises(ValueError, match="dtype object"):
            ring.put(np.array([None, 1], dtype=object))
        with pytest.raises(ValueError, match="cannot travel"):
            ring.put(np.zeros(2, dtype=[("a", np.int8), ("b", np.float32)]))
        assert ring.in_use == 0  # a refused put claims nothing


@pytest.mark.parametrize("how", ["exit", "os._exit", "SIGKILL"])
def test_an_attacher_exiting_leaves_the_segment(how):
    ending = {"exit": "pass", "os._exit": "os._exit(3)", "SIGKILL": "os.kill(os.getpid(), signal.SIGKILL)"}[how]
    data = np.arange(1000, dtype=np.int64)
    with shm.SlotRing(1, data.nbytes) as ring:
        ref = ring.put(data)
        done = child(f"assert shm.view(arg)[999] == 999\n{ending}\n", ref)
        assert done.returncode == {"exit": 0, "os._exit": 3, "SIGKILL": -signal.SIGKILL}[how], done.stderr
        assert "leaked" not in done.stderr and done.stderr == ""
        time.sleep(0.1)  # a tracker would unlink right after the exit
        assert ring.name in shm_segments()
        np.testing.assert_array_equal(ring.view(ref), data)
        assert child("assert shm.view(arg)[999] == 999", ref).returncode == 0  # still attachable


def test_the_trap_a_plain_shared_memory_attach_destroys_the_owners_segment():
    """Why attach() does not use SharedMemory(name=...): on exit, the attacher's tracker unlinks the segment."""
    with shm.SlotRing(1, 64) as ring:
        done = child("from multiprocessing.shared_memory import SharedMemory\nSharedMemory(name=arg).close()",
                     ring.name)
        assert "leaked shared_memory" in done.stderr
        assert gone_within(ring.name)
    # and the owner's close() copes with the segment already gone


def test_a_killed_owner_is_cleaned_up_by_its_resource_tracker():
    owner = subprocess.Popen([sys.executable, "-c", """
import time
import numpy as np
from asynca3c.runtime import shm
ring = shm.SlotRing(2, 1 << 20)
ring.put(np.ones(1000))
print(ring.name, flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    name = ""
    try:
        assert owner.stdout is not None
        name = owner.stdout.readline().strip()
        assert name.startswith(shm.PREFIX) and name in shm_segments()
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        assert gone_within(name), "the killed owner's resource tracker did not unlink its segment"
        _, err = owner.communicate(timeout=10)  # the tracker held stderr; it has exited
        assert "1 leaked shared_memory" in err  # it said what it cleaned up
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.communicate()
        if name and (SHM_DIR / name).exists():
            (SHM_DIR / name).unlink()


def test_a_crashed_learner_leaves_nothing_after_the_owners_close():
    data = np.random.default_rng(2).integers(0, 256, size=(4, 84, 84), dtype=np.uint8)
    ring = shm.SlotRing(2, data.nbytes)
    try:
        ref = ring.put(data)
        learner = popen("v = shm.view(arg)\nprint(int(v.sum()), flush=True)\ntime.sleep(60)\n", ref)
        assert learner.stdout is not None
        assert int(learner.stdout.readline()) == int(data.sum())  # mid-use, holding a view
        learner.send_signal(signal.SIGKILL)
        _, err = learner.communicate(timeout=10)
        assert learner.returncode == -signal.SIGKILL and err == ""
        assert ring.name in shm_segments()
        np.testing.assert_array_equal(ring.view(ref), data)
    finally:
        ring.close()
    assert gone_within(ring.name, 0)


def test_close_is_idempotent_and_views_outlive_it():
    ring = shm.SlotRing(1, 64)
    ref = ring.put(np.arange(8.0))
    assert ref is not None
    mine, theirs = ring.view(ref), shm.view(ref)
    ring.close()
    ring.close()
    assert ring.closed and ring.name not in shm_segments()
    assert mine[7] == 7.0 and theirs[7] == 7.0  # still mapped: the views hold the mappings
    shm.attach(ref.name).close()
    with pytest.raises(ValueError, match="closed"):
        ring.view(ref)
    ring.release(ref.slot)  # a late release after close is harmless
    with pytest.raises(FileNotFoundError, match="owner closed it"):
        shm.attach(ref.name)


def test_ensure_ring_grows_and_retires_the_old_ring_after_its_last_release():
    small = shm.SlotRing(2, 64)
    ref = small.put(np.ones(8))
    assert ref is not None and shm.ensure_ring(small, 64) is small
    big = shm.ensure_ring(small, 1000)
    try:
        assert big is not small and big.slots == 2 and big.slot_bytes >= 1000
        assert small.name in shm_segments()  # a handle is out: the reader may not have attached yet
        np.testing.assert_array_equal(shm.view(ref), np.ones(8))
        small.release(ref.slot)
        assert small.closed and small.name not in shm_segments()
        assert big.put(np.zeros(125)) is not None
    finally:
        big.close()
        small.close()


def test_writers_own_disjoint_ranges():
    with shm.SlotRing(5, 64) as ring:
        grants = ring.writer_grants(2)
        assert [g.slots for g in grants] == [range(0, 3), range(3, 5)]
        assert ring.claim() is None and ring.put(np.ones(1)) is None
        with pytest.raises(ValueError, match="already split"):
            ring.writer_grants(2)
        done = child("""
writer = shm.SlotWriter(arg)
refs = [writer.put(np.full(4, k, np.float64)) for k in range(3)]
assert refs[2] is None
writer.release(refs[0].slot)
refs[2] = writer.put(np.full(4, 2.0))
print(pickle.dumps(refs).hex())
writer.close()
""", grants[1])
        assert done.returncode == 0 and done.stderr == "", done.stderr
        refs = pickle.loads(bytes.fromhex(done.stdout))
        assert [r.slot for r in refs] == [3, 4, 3]
        np.testing.assert_array_equal(ring.view(refs[1]), np.full(4, 1.0))
        np.testing.assert_array_equal(ring.view(refs[2]), np.full(4, 2.0))


def test_a_worker_keeps_a_bounded_number_of_attachments():
    rings = [shm.SlotRing(1, 64) for _ in range(shm.MAX_ATTACHED + 1)]
    try:
        first = shm.attach(rings[0].name)
        for ring in rings[1:]:
            shm.attach(ring.name)
        assert first.closed  # the least recently attached was unmapped
        assert not shm.attach(rings[-1].name).closed
    finally:
        for ring in rings:
            ring.close()


def test_a_segment_names_the_process_that_made_it():
    import os
    with shm.SlotRing(1, 64) as ring:
        assert shm.maker_pid(ring.name) == os.getpid() and len(ring.name) <= 31  # macOS's limit
    assert shm.maker_pid("asynca3c_0123abcd") is None and shm.maker_pid("other_12_ab") is None
