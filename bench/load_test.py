"""Load test of the served champion on loopback: a fixed count of mixed good and bad requests from concurrent
clients (bounded asyncio client: no unbounded loop, a global deadline), then a last health check.

    .venv/bin/python bench/load_test.py [--requests 10000] [--concurrency 8] [--bad-fraction 0.2] [--deadline 900]

Prints throughput, p50/p95/p99 latency of good requests, and the counts of 5xx, of 4xx per bad-request kind,
of good requests that did not get 200, and of dropped connections. Exit code 1 if any good request failed,
any bad request got something else than a 4xx, or the server stopped answering."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import articles, start_server  # noqa: E402

BAD = {
    "malformed_json": lambda d: {"content": b'{"dataframe_records": [{"text": ', "headers": {"Content-Type": "application/json"}},
    "missing_text": lambda d: {"json": {"dataframe_records": [{"body": d}]}},
    "text_not_string": lambda d: {"json": {"dataframe_records": [{"text": 12345}]}},
    "empty_text": lambda d: {"json": {"dataframe_records": [{"text": "  "}]}},
    "huge_text": lambda d: {"json": {"dataframe_records": [{"text": "Titre\n" + "mot " * 262_144}]}},
}


async def run(url: str, n: int, concurrency: int, bad_fraction: float, deadline: float, seed: int) -> dict:
    import httpx

    rng = random.Random(seed)
    docs = articles(500)
    plan = [rng.choice(list(BAD)) if rng.random() < bad_fraction else "good" for _ in range(n)]
    huge = BAD["huge_text"]("")  # build the 1 MB body once
    queue: asyncio.Queue = asyncio.Queue()
    for i, kind in enumerate(plan):
        queue.put_nowait((i, kind))
    lat: list[float] = []
    status: Counter = Counter()
    dropped = 0
    stop_at = time.perf_counter() + deadline

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal dropped
        while not queue.empty() and time.perf_counter() < stop_at:
            i, kind = queue.get_nowait()
            if kind == "good":
                kw = {"json": {"dataframe_records": [{"text": docs[i % len(docs)]}]}}
            elif kind == "huge_text":
                kw = huge
            else:
                kw = BAD[kind](docs[i % len(docs)])
            t0 = time.perf_counter()
            try:
                r = await client.post(url + "/invocations", **kw)
                code = r.status_code
            except httpx.HTTPError:
                dropped += 1
                continue
            if kind == "good":
                lat.append(time.perf_counter() - t0)
            status[(kind, code)] += 1

    t0 = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        healthy = (await client.get(url + "/ping")).status_code == 200
    wall = time.perf_counter() - t0
    done = sum(status.values())
    ms = np.asarray(lat) * 1000 if lat else np.zeros(1)
    return {
        "requests_planned": n, "requests_done": done, "dropped_connections": dropped, "wall_s": round(wall, 1),
        "throughput_rps": round(done / wall, 1),
        "good_latency_ms": {"p50": round(float(np.percentile(ms, 50)), 1), "p95": round(float(np.percentile(ms, 95)), 1),
                            "p99": round(float(np.percentile(ms, 99)), 1)},
        "5xx": sum(v for (k, c), v in status.items() if c >= 500),
        "good_not_200": sum(v for (k, c), v in status.items() if k == "good" and c != 200),
        "bad_by_kind": {k: {str(c): v for (kk, c), v in status.items() if kk == k} for k in BAD},
        "bad_not_4xx": sum(v for (k, c), v in status.items() if k != "good" and not 400 <= c < 500),
        "server_answers_after": healthy,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models:/vigie@champion")
    ap.add_argument("--url", default=None, help="an already running server (default: start one on a free port)")
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--bad-fraction", type=float, default=0.2)
    ap.add_argument("--deadline", type=float, default=900, help="seconds; the test stops sending after this")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    proc = None
    url = args.url
    if url is None:
        proc, url = start_server(args.model)
    assert url.startswith(("http://127.", "http://localhost", "http://[::1]")), "loopback targets only"
    try:
        res = asyncio.run(run(url, args.requests, args.concurrency, args.bad_fraction, args.deadline, args.seed))
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    print(json.dumps(res, indent=2))
    ok = res["good_not_200"] == 0 and res["bad_not_4xx"] == 0 and res["5xx"] == 0 and res["server_answers_after"] and res["dropped_connections"] == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
