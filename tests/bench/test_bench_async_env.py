"""The async-environment benchmark and the seed's threaded baseline, on a tiny budget (no timing asserts)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import bench_async_env  # noqa: E402
import seed_threaded  # noqa: E402


def test_bench_async_env_writes_rows_for_each_agent_count(tmp_path, capsys):
    out = tmp_path / "async.json"
    assert bench_async_env.main(["--agents", "1,8", "--seconds", "1", "--latency", "0.002",
                                 "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [r["agents"] for r in data["rows"]] == [1, 8]
    for row in data["rows"]:
        assert row["ideal"] == row["agents"] / 0.002
        assert row["asynca3c"]["steps_per_second"] > 0 and row["seed_threaded_steps_per_second"] > 0
        assert 0 < row["bare_sleep_per_second"] <= row["ideal"] * 1.05  # no sleeper wakes early
    assert "| 8 | 4,000 |" in capsys.readouterr().out


def test_seed_threaded_baseline_trains_and_reports_like_asynca3c():
    r = seed_threaded.run("CartPole-v1", 2.0, agents=4, seed=0)
    assert r["env_steps"] > 0 and r["episodes"] > 0 and r["updates"] > 0
    assert {"steps_per_second", "solved", "solved_after_seconds", "eval_window_mean_return"} <= set(r)
