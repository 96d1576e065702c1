"""Serving throughput and latency of a model: over HTTP (`vigie serve`, N worker processes) and in-process.

    MLFLOW_TRACKING_URI=... .venv/bin/python bench/bench_serving.py [--model models:/vigie@champion]
        [--articles 2000] [--batch 32] [--clients 4] [--workers 2] [--single 200] [--json out.json]

Articles: the first --articles OrangeSum articles of the `train` split that have a body, read from the shared
shards (../shared/data/orangesum/shards; `valid` and `test` are never read), each sent as the served contract
takes it: `text` = title, lead and body on their own lines, and `date`.
1. HTTP: starts `vigie serve --model M --workers W` on a free loopback port, warms every worker up, then posts all
   the articles in batches of --batch from --clients threads at once, each taking the next batch when its answer
   is in (a shared queue, as a batch job's thread pool does): articles/s over the wall time; then --single
   one-article requests one at a time: p50/p95 latency. The server (its own process group) is stopped by its pid.
2. In-process: the same model loaded with `training.registry.load_model`, the same batches one after the other in
   this process (one core): articles/s; one-article p50/p95.
Every answer is checked (status 200, one row per article). Loopback only, bounded in count."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARDS = REPO.parent / "shared" / "data" / "orangesum" / "shards"


def articles(n: int) -> list[dict]:
    """The first n `train` articles with a body, in shard order, as served-contract records."""
    out = []
    for shard in sorted(SHARDS.glob("orangesum_topic_*.jsonl.gz")):
        with gzip.open(shard, "rt") as fh:
            for line in fh:
                d = json.loads(line)
                if d.get("split") == "train" and d.get("text"):
                    out.append({"text": f"{d['title']}\n{d.get('abstract') or ''}\n{d['text']}", "date": d.get("date")})
                    if len(out) == n:
                        return out
    if len(out) < n:
        sys.exit(f"only {len(out)} train articles with a body under {SHARDS}")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, workers: int, timeout_s: float = 600) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "training.cli", "serve", "--model", model, "--port", str(port),
           "--workers", str(workers)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/ping", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_server(proc)
    sys.exit("server did not answer /ping in time")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the server's own session: uvicorn's workers go with it
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of the live processes of a process group (the server and its workers), from /proc."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[2]) == pgid:  # fields after the command name: state, ppid, pgrp, ...
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def pct(seconds: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1000, q))


def http_figures(url: str, batches: list[list[dict]], singles: list[dict], clients: int, workers: int,
                 server_pgid: int) -> dict:
    import httpx

    headers = {"content-type": "application/json"}

    def encode(rows: list[dict]) -> tuple[bytes, int]:
        return json.dumps({"dataframe_records": rows}).encode(), len(rows)

    def post(client: httpx.Client, request: tuple[bytes, int]) -> None:
        body, rows = request
        r = client.post(url + "/invocations", content=body, headers=headers)
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:500]}")
        got = r.json()
        n = len(got["predictions"]) if isinstance(got, dict) and "predictions" in got else len(got)
        if n != rows:
            raise RuntimeError(f"{n} rows answered for {rows} sent")

    def run(chunk: list[tuple[bytes, int]]) -> None:  # warm-up: a new connection per chunk
        with httpx.Client(timeout=120) as client:
            for request in chunk:
                post(client, request)

    # the request bodies are encoded before the clock starts: the load generator shares the machine's cores with
    # the server, and what it spends is reported (`client_cpu_s`), not counted as the server's work
    requests = [encode(rows) for rows in batches]
    one = [encode([row]) for row in singles]

    # warm-up: enough concurrent batches that every worker has loaded the model and answered a few
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(run, [[requests[i % len(requests)]] * 2 for i in range(max(clients, 2 * workers))]))
    # a shared queue rather than a fixed share per client: with fixed shares the wall time is that of the client
    # whose connection landed on the busiest worker
    local, opened = threading.local(), []

    def post_next(request: tuple[bytes, int]) -> None:
        if not hasattr(local, "client"):  # one keep-alive client per thread
            local.client = httpx.Client(timeout=120)
            opened.append(local.client)
        post(local.client, request)

    t0, cpu0, server0 = time.perf_counter(), time.process_time(), group_cpu_s(server_pgid)
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(post_next, requests))
    wall, client_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    server_cpu = group_cpu_s(server_pgid) - server0
    for c in opened:
        c.close()
    latency = []
    with httpx.Client(timeout=60) as client:
        for request in one:
            t = time.perf_counter()
            post(client, request)
            latency.append(time.perf_counter() - t)
    n = sum(map(len, batches))
    return {"articles": n, "wall_s": wall, "articles_per_s": n / wall, "client_cpu_s": client_cpu,
            "server_cpu_s": server_cpu,
            "one_p50_ms": pct(latency, 50), "one_p95_ms": pct(latency, 95)}


def inprocess_figures(model_uri: str, batches: list[list[dict]], singles: list[dict]) -> dict:
    import pandas as pd

    from training.registry import load_model

    model = load_model(model_uri)
    frames = [pd.DataFrame(rows) for rows in batches]
    for f in frames[:2]:
        model.predict(f)  # warm-up
    t0 = time.perf_counter()
    for f in frames:
        out = model.predict(f)
        if len(out) != len(f):
            raise RuntimeError(f"{len(out)} rows answered for {len(f)}")
    wall = time.perf_counter() - t0
    latency = []
    for row in singles:
        f = pd.DataFrame([row])
        t = time.perf_counter()
        model.predict(f)
        latency.append(time.perf_counter() - t)
    n = sum(map(len, batches))
    return {"articles": n, "wall_s": wall, "articles_per_s": n / wall, "one_p50_ms": pct(latency, 50),
            "one_p95_ms": pct(latency, 95)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models:/vigie@champion")
    ap.add_argument("--articles", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    ap.add_argument("--workers", type=int, default=2, help="`vigie serve --workers`")
    ap.add_argument("--single", type=int, default=200, help="one-article requests for the latency figures")
    ap.add_argument("--no-http", action="store_true")
    ap.add_argument("--no-inprocess", action="store_true")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()

    docs = articles(args.articles)
    batches = [docs[i:i + args.batch] for i in range(0, len(docs), args.batch)]
    singles = docs[: args.single]
    figures = {"model": args.model, "articles": len(docs), "batch": args.batch, "cpu_count": os.cpu_count(),
               "mean_text_chars": float(np.mean([len(d["text"]) for d in docs]))}
    if not args.no_http:
        proc, url = start_server(args.model, args.workers)
        try:
            figures["http"] = {"workers": args.workers, "clients": args.clients,
                               **http_figures(url, batches, singles, args.clients, args.workers, proc.pid)}
        finally:
            stop_server(proc)
    if not args.no_inprocess:
        figures["in_process"] = inprocess_figures(args.model, batches, singles)
    print(f"model {args.model}: {len(docs)} train articles ({figures['mean_text_chars']:.0f} characters on average), "
          f"batches of {args.batch}")
    for name, f in (("HTTP", figures.get("http")), ("in-process", figures.get("in_process"))):
        if f:
            extra = (f"  ({f['workers']} workers using {f['server_cpu_s']:.1f} CPU s and {f['clients']} clients "
                     f"{f['client_cpu_s']:.1f} CPU s of {f['wall_s']:.1f} s wall)" if name == "HTTP" else "  (1 process)")
            print(f"{name:11s} {f['articles_per_s']:7.1f} articles/s   one article: p50 {f['one_p50_ms']:6.1f} ms  "
                  f"p95 {f['one_p95_ms']:6.1f} ms{extra}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
