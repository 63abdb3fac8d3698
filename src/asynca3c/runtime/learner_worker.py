"""The learner's worker process: ``python -m asynca3c.runtime.learner_worker``.

Reads requests from stdin and answers each, in order, on stdout, as frames
(``asynca3c.runtime.wire``); the parent (``learner_client.ProcessLearner``) is
the only peer, and it sends only what it pickled itself. Imports the core and
the wire format, nothing of the loop side. Anything the worker would print goes
to stderr so the protocol stream stays clean.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import traceback
from typing import BinaryIO

from asynca3c.core.learner import Learner, LearnerSpec
from asynca3c.runtime import shm
from asynca3c.runtime.wire import portable, read_frame, write_frame


def answer(learner: Learner | None, op: str, arg) -> tuple[Learner | None, object]:
    """One request (op, arg) to ``learner`` (None before 'init'): the learner from now on, and the reply.
    The worker process and the Ray learner actor both answer this way."""
    if op == "init":
        if not isinstance(arg, LearnerSpec):
            raise TypeError(f"init needs a LearnerSpec, got {type(arg).__name__}")
        learner = arg.build()
        learner.copy_weights = False  # each reply is packed or pickled before the next request is read
        return learner, learner.version
    if learner is None:
        raise RuntimeError(f"learner request {op!r} before 'init'")
    if op in ("step", "learn"):
        # Through shared memory (ProcessLearner): a SlotRef to the observations, read in place before the
        # reply, and a flat slot that the weights are written into; either may be None.
        batch, lr_factor, frames, weights_slot = (*arg, None, None)[:4]
        if frames is not None:
            batch = dataclasses.replace(batch, obs=shm.view(frames))
        stats, weights = (learner.step if op == "step" else learner.learn)(batch, lr_factor)
        learner.unshipped += 1
        if learner.unshipped < learner.config.weights_every:
            return learner, (stats, None)  # the acting copy waits for a later update's weights
        learner.unshipped = 0
        arrays = [w.numpy() for w in weights]
        return learner, (stats, arrays if weights_slot is None else shm.pack_into(weights_slot, arrays))
    if op == "state":
        return learner, learner.state()
    if op == "load":
        learner.load(arg)
        return learner, None
    raise ValueError(f"unknown learner request {op!r}")


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """Answer requests until 'close' or end of input. Requests are (op, arg)."""
    learner: Learner | None = None
    while True:
        request = read_frame(inp)
        if request is None or request[0] == "close":
            return
        op, arg = request
        try:
            learner, reply = answer(learner, op, arg)
        except Exception as exc:  # the parent re-raises it where it awaited the request
            write_frame(out, ("error", portable(exc), traceback.format_exc()))
            continue
        write_frame(out, ("ok", reply))


def main() -> None:
    # A terminal's Ctrl-C reaches the whole process group: the parent decides what stopping means and
    # closes our stdin; a KeyboardInterrupt here would be a death it has to restart from.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr  # stray prints must not corrupt the frames
    serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    main()
