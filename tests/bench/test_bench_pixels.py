"""The pixel benchmark's comparison of learning curves (no game is played here)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "bench_pixels", Path(__file__).resolve().parents[2] / "bench" / "bench_pixels.py")
assert _spec is not None and _spec.loader is not None
bench_pixels = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_pixels)


def test_a_curve_is_above_its_peer_from_the_point_after_its_last_point_below():
    peer = [(0.0, 0, -20.0), (100.0, 1000, -10.0)]  # interpolated: -15 at 50 s
    points = [(10.0, 0, -19.0), (30.0, 0, -18.0), (50.0, 0, -14.0), (70.0, 0, -12.0), (200.0, 0, -30.0)]
    since, share = bench_pixels._above(points, [peer])
    # -19 > -19 is false at 10 s; -18 < -17 at 30 s; from 50 s on above (200 s is past the peer's span)
    assert since == 50.0 and share == pytest.approx(2 / 4)
    assert bench_pixels._above([(90.0, 0, -20.0)], [peer]) == (None, 0.0)  # its last point is below
    assert bench_pixels._above([(150.0, 0, 0.0)], [peer]) == (None, 0.0)  # nothing within the span


def test_with_several_peer_seeds_a_point_counts_as_above_only_when_above_every_one():
    low, high = [(0.0, 0, -20.0), (100.0, 0, -20.0)], [(0.0, 0, -16.0), (80.0, 0, -16.0)]
    points = [(20.0, 0, -18.0), (60.0, 0, -15.0), (90.0, 0, -10.0)]  # 90 s: past the shorter peer's span
    assert bench_pixels._above(points, [low, high]) == (60.0, pytest.approx(1 / 2))
    assert bench_pixels._above(points, [low]) == (20.0, 1.0)


def test_curves_are_paired_with_the_peer_of_the_same_cnn():
    # SB3's system names its CNN; the label is only a file-name tag
    assert bench_pixels._encoder({"system": "sb3-a2c-a3c", "label": "a3c-60min"}) == "a3c"
    assert bench_pixels._encoder({"system": "sb3-a2c", "label": "a3c"}) == "nature"
    assert bench_pixels._encoder({"system": "asynca3c-a3c", "config": {"encoder": "a3c"}}) == "a3c"
    assert bench_pixels._encoder({"system": "asynca3c-auto", "config": {"encoder": "auto"}}) == "nature"
    run = {"system": "asynca3c-a3c", "curve": [(10.0, 0, math.nan, 1.0), (20.0, 5, -21.0, 1.0)]}
    assert bench_pixels._points(run) == [(20.0, 5, -21.0, 1.0)]  # the points before whole games are left out
