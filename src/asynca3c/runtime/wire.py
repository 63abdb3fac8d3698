"""The wire format of the learner and shard pipes: frames of an 8-byte little-endian length, then a pickle.

A module of its own so the parent can import it without importing the worker's
``-m`` entry module (runpy warns when that module is already in sys.modules).
"""

from __future__ import annotations

import asyncio
import pickle
import struct

HEADER = struct.Struct("<Q")


def encode_frame(obj) -> bytes:
    """One frame: the pickle's length, then the pickle."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


def write_frame(stream, obj) -> None:
    stream.write(encode_frame(obj))
    stream.flush()


def read_frame(stream):
    """The next object, or None at end of input."""
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (size,) = HEADER.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


async def read_frame_async(reader):
    """The next object from an ``asyncio.StreamReader``, or None at end of input."""
    try:
        (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
        return pickle.loads(await reader.readexactly(size))
    except asyncio.IncompleteReadError:
        return None
