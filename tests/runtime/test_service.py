"""The example web service, started for real on a loopback port and called while it trains."""

from __future__ import annotations

import asyncio
import math
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

SERVICE = Path(__file__).resolve().parents[2] / "examples" / "service.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _exercise(base: str) -> dict:
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 60
        while True:  # the server is up once /metrics answers
            try:
                async with http.get(f"{base}/metrics") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientConnectionError:
                pass
            assert time.monotonic() < deadline, "the service did not come up"
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # training now
        latencies, actions = [], []
        for _ in range(100):
            t0 = time.perf_counter()
            async with http.post(f"{base}/act", json={"obs": [0.01, 0.0, -0.02, 0.0]}) as r:
                assert r.status == 200
                actions.append((await r.json())["action"])
            latencies.append((time.perf_counter() - t0) * 1000)
        async with http.post(f"{base}/act", json={"obs": [1, 2]}) as r:
            bad = (r.status, await r.text())
        async with http.get(f"{base}/metrics") as r:
            metrics = await r.json()
        async with http.post(f"{base}/stop") as r:
            result = await r.json()
        async with http.post(f"{base}/act", json={"obs": [0.0] * 4, "deterministic": True}) as r:
            after = (await r.json())["action"]
    return dict(latencies=latencies, actions=actions, bad=bad, metrics=metrics, result=result, after=after)


def test_service_trains_and_answers_while_it_trains():
    port = _free_port()
    server = subprocess.Popen([sys.executable, str(SERVICE), "--port", str(port), "--seconds", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        got = asyncio.run(_exercise(f"http://127.0.0.1:{port}"))
    finally:
        server.send_signal(signal.SIGINT)
        try:
            out, _ = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            out, _ = server.communicate()
    assert server.returncode == 0, out
    assert set(got["actions"]) <= {0, 1} and got["after"] in (0, 1)
    assert got["bad"][0] == 400 and "expects 4 numbers" in got["bad"][1]
    assert got["metrics"]["env_steps"] > 0 and got["metrics"]["updates"] > 0
    result = got["result"]
    assert result["stop_reason"] == "requested" and result["updates"] >= got["metrics"]["updates"]
    assert math.isfinite(result["eval_mean_return"]) and result["loop_lag_p99_ms"] is not None
    p50 = statistics.median(got["latencies"])
    p99 = statistics.quantiles(got["latencies"], n=100)[98]
    print(f"/act latency while training: median {p50:.2f} ms, p99 {p99:.2f} ms")
    assert p99 < 1000, p99  # loose: it answers, it does not wait behind training
