"""The served champion over HTTP against in-process predict, on the same articles.

    .venv/bin/python bench/bench_serving.py [--model models:/vigie@champion] [--n 200] [--batch 32]

Starts `vigie serve` on a free loopback port, measures one-article latency (p50/p95 over --n requests, one at a
time) and batched throughput (docs/s, --batch articles a request), then the same model loaded in-process;
stops the server by its own pid. Loopback only, bounded in count."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARDS = REPO / "data" / "raw" / "orangesum" / "shards"


def articles(n: int) -> list[str]:
    out = []
    with gzip.open(SHARDS / "orangesum_topic_05.jsonl.gz", "rt") as fh:
        for line in fh:
            d = json.loads(line)
            if d.get("text"):
                out.append(f"{d['title']}\n{d.get('abstract') or ''}\n{d['text']}")
            if len(out) == n:
                return out
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "training.cli", "serve", "--model", model, "--port", str(port)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if httpx.get(url + "/ping", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    sys.exit("server did not start")


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


def main() -> None:
    import httpx
    import pandas as pd

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models:/vigie@champion")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=20)
    args = ap.parse_args()
    docs = articles(max(args.n, args.batch * args.batches))
    proc, url = start_server(args.model)
    try:
        with httpx.Client(timeout=60) as c:
            c.post(url + "/invocations", json={"dataframe_records": [{"text": docs[0]}]})  # warm-up
            lat = []
            for d in docs[: args.n]:
                t0 = time.perf_counter()
                r = c.post(url + "/invocations", json={"dataframe_records": [{"text": d}]})
                lat.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
            t0 = time.perf_counter()
            for k in range(args.batches):
                r = c.post(url + "/invocations", json={"dataframe_records": [{"text": d} for d in docs[k * args.batch:(k + 1) * args.batch]]})
                assert r.status_code == 200
            http_tput = args.batch * args.batches / (time.perf_counter() - t0)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    from training.registry import load_model

    model = load_model(args.model)
    model.predict(pd.DataFrame({"text": docs[:1]}))
    lat_in = []
    for d in docs[: args.n]:
        t0 = time.perf_counter()
        model.predict(pd.DataFrame({"text": [d]}))
        lat_in.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for k in range(args.batches):
        model.predict(pd.DataFrame({"text": docs[k * args.batch:(k + 1) * args.batch]}))
    in_tput = args.batch * args.batches / (time.perf_counter() - t0)
    print(f"model {args.model}")
    print(f"HTTP        one article: p50 {pct(lat, 50):7.1f} ms  p95 {pct(lat, 95):7.1f} ms   batch {args.batch}: {http_tput:7.1f} docs/s")
    print(f"in-process  one article: p50 {pct(lat_in, 50):7.1f} ms  p95 {pct(lat_in, 95):7.1f} ms   batch {args.batch}: {in_tput:7.1f} docs/s")


if __name__ == "__main__":
    main()
