"""The host's ceiling for the served path: the model in-process in P processes at once, no HTTP.

    MLFLOW_TRACKING_URI=... .venv/bin/python bench/bench_cores.py [--model models:/vigie@champion] [--processes 2]
        [--articles 2000] [--batch 32] [--passes 3]

Each process loads the model (`training.registry.load_model`), waits at a barrier, then scores the same
`bench_serving.articles` (OrangeSum `train` only) in batches, --passes times. Prints each process's articles/s per
pass and the sum over processes of their median: what P fully busy server workers could give at most, before any
HTTP, JSON or scheduling cost. Compare with `bench_serving.py`'s HTTP figure on the same host."""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def score(model_uri: str, n: int, batch: int, passes: int, barrier, out) -> None:
    import pandas as pd
    from bench_serving import articles

    from training.registry import load_model

    rows = articles(n)
    model = load_model(model_uri)
    frames = [pd.DataFrame(rows[i:i + batch]) for i in range(0, n, batch)]
    model.predict(frames[0])  # warm-up
    barrier.wait()
    rates = []
    for _ in range(passes):
        start = time.perf_counter()
        for f in frames:
            model.predict(f)
        rates.append(n / (time.perf_counter() - start))
    out.put(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models:/vigie@champion")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--articles", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--passes", type=int, default=3)
    args = ap.parse_args()

    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(args.processes), ctx.Queue()
    procs = [ctx.Process(target=score, args=(args.model, args.articles, args.batch, args.passes, barrier, out))
             for _ in range(args.processes)]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    for i, rates in enumerate(results):
        print(f"process {i}: " + " ".join(f"{r:.0f}" for r in rates) + " articles/s per pass")
    total = sum(statistics.median(r) for r in results)
    print(f"{args.processes} processes at once: {total:.0f} articles/s in all (sum of medians), batches of {args.batch}")


if __name__ == "__main__":
    main()
