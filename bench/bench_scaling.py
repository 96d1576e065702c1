"""Cost against size: `vigie data build` and `vigie train` on 1x, 2x, 4x and 8x the OrangeSum corpus.

    nice -n 10 .venv/bin/python bench/bench_scaling.py [--scales 0.5,1,2,4,8] [--stages build,train]
        [--train-scales 0.5,1,2] [--workdir /tmp/vigie-scaling] [--budget-min 60]
        [--train-override evaluate.oof_folds=0 ...] [--override key=value ...]
    .venv/bin/python bench/bench_scaling.py --replot /tmp/vigie-scaling/scaling.json   # table + plot again

The larger corpora are made from the real one (`../shared/data/orangesum/shards`), under `--workdir`, never in
the repository. Scale s is the 10 real shards plus s-1 *rounds* of copies, each round as many articles as the
corpus (36,152), so scale s holds exactly s x 36,152 articles (+ the seeds/ source, as in the baseline config).
Only `train` and `unsplit` articles are copied (the 33,152 of them, cycled): the reserved `test`/`valid`
articles are never copied, so the test split stays the real 3,000 and no copy of a reserved article can reach
train. A copy keeps its original's split, section, date and tags; it gets a new id (`<id>-c<q>`, q-th copy of
that article) and a seeded perturbation of its text (seed = the id and q, so 2x is inside 4x is inside 8x):
- `exact` (10 %): the same title and body, new id: the build's exact dedup collapses it;
- `near` (30 %): 2-5 word edits (drop / swap / repeat a word) and, in longer bodies, one sentence dropped;
  the title edited in 7 of 10 of them: MinHash LSH must find the pair (Jaccard of 5-word shingles >= 0.8
  for 88 % of them);
- `far` (60 %): a third of the sentences dropped and 1-2 word edits in every other one, title edited: a
  follow-up that reuses the wire copy, mostly below the threshold (mean Jaccard 0.51): a new article for
  dedup, verified and rejected when LSH proposes it.
Round shards are written once and reused (a manifest records how they were made); a scale's shard folder is
symlinks to the real shards and to its rounds. A scale below 1 is the real corpus sliced by `data.max_articles`
(the build's own deterministic slice: every stance-annotated article, the rest at random): it gives train a
size axis below 1x without copies; such a build still reads the whole 1x corpus, so builds are fitted on the
scales >= 1 only.

Each stage runs as a subprocess (cwd: the repository; temporary MLflow store under --workdir, experiment
`vigie-scaling`, artifacts there too). Measured per scale and stage: wall time, CPU time of the process and its
waited-for descendants (`wait4`: the load-independent figure on a shared host), the peak memory of the whole
process tree (sampled every 0.1 s from /proc/PID/status: every process's anonymous resident memory plus the
main process's file pages, so shared libraries count once; the build reads shards in 2 worker processes,
training fits in joblib workers) and the kernel's high-water RSS of the largest single process. The build runs
as `vigie data build` through a thin wrapper (this file, `--_child-build`) that times each step of
`training.data.build` and of the dedup inside it (wall and CPU); train's sub-steps are read off its stderr
(vocabulary, per-task fit). The growth exponent of a stage is the least-squares slope of log(wall), log(CPU) and
log(peak memory) against log(articles); steps are fitted on their CPU time.

Train runs the baseline config with `--train-override` (default `evaluate.oof_folds=0`: the 5 out-of-fold refits
of the stance model are evaluation, not training; every model setting is the config's). The stance labels are
the annotated articles (3,864 adjudicated; ~3,300 train rows), and copies carry none: the stance model's rows
do not grow with the corpus, the topic model's do. Order: build and train at each scale <= 1, then every larger build, then train at the larger
scales. The time budget (`--budget-min`, from the start, corpora included) limits training only: every build
scale runs; a train stage predicted (power law through the train scales measured) to end past the budget is
skipped, saying why, and one still running at the deadline is killed. Any stage predicted above
`--mem-fraction` of the memory available is skipped.

Writes a table on stdout, the figures as JSON (`--json`, default <workdir>/scaling.json) and a log-log plot
(`--plot`, default docs/figures/scaling.png). Smoke run: `--base-articles 2000 --scales 0.5,1,2 --workdir
/tmp/x --plot /tmp/x/scaling.png` (copies of the first 2,000 articles only)."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARDS = REPO.parent / "shared" / "data" / "orangesum" / "shards"
CONFIG = REPO / "configs" / "baseline.yaml"
GEN_VERSION = 1  # bump when the perturbation changes: round shards are rebuilt
SHARD_SIZE = 3616  # articles per round shard, as the real shards hold
MODES = (("exact", 0.10), ("near", 0.30), ("far", 0.60))
COPIED_SPLITS = ("train", "unsplit")
EXPERIMENT = "vigie-scaling"


# --- the scaled corpora ------------------------------------------------------------------------------------


def _rng(*parts) -> random.Random:
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(h, "big"))


_SENT = re.compile(r"(?<=[.!?…])\s+")


def _edit_words(words: list[str], rng: random.Random, n: int) -> list[str]:
    words = list(words)
    for _ in range(n):
        if len(words) < 3:
            break
        i = rng.randrange(len(words) - 1)
        op = rng.randrange(3)
        if op == 0:
            del words[i]
        elif op == 1:
            words[i], words[i + 1] = words[i + 1], words[i]
        else:
            words.insert(i, words[i])
    return words


def _edit_title(title: str, rng: random.Random, n: int) -> str:
    words = title.split()
    return " ".join(_edit_words(words, rng, n)) if len(words) >= 3 else title


def _edit_body(text: str, rng: random.Random, n_edits: int) -> str:
    """n word edits at random places of the body, paragraphs kept."""
    paras = text.split("\n")
    sizes = [len(p.split()) for p in paras]
    if not sum(sizes):
        return text
    for k in rng.choices(range(len(paras)), weights=sizes, k=n_edits):
        paras[k] = " ".join(_edit_words(paras[k].split(), rng, 1))
    return "\n".join(paras)


def _drop_sentences(text: str, rng: random.Random, frac: float, at_least: int) -> str:
    paras = [_SENT.split(p) for p in text.split("\n")]
    spots = [(i, j) for i, ss in enumerate(paras) for j in range(len(ss))]
    if len(spots) < at_least:
        return text
    n = max(1, round(frac * len(spots))) if frac else 1
    drop = set(rng.sample(spots, min(n, len(spots) - 1)))
    kept = [" ".join(s for j, s in enumerate(ss) if (i, j) not in drop) for i, ss in enumerate(paras)]
    return "\n".join(p for p in kept if p.strip())


def perturb(rec: dict, q: int) -> tuple[dict, str]:
    """The q-th copy of a record: new id, seeded perturbation (see the module doc). (record, mode)."""
    rng = _rng("copy", rec["id"], q)
    u = rng.random()
    mode = "exact" if u < MODES[0][1] else "near" if u < MODES[0][1] + MODES[1][1] else "far"
    out = dict(rec, id=f"{rec['id']}-c{q}")
    if rec.get("url"):
        out["url"] = f"{rec['url']}?copie={q}"
    text, title = rec.get("text") or "", rec.get("title") or ""
    if mode == "near":
        if len(text.split()) >= 120 and rng.random() < 0.5:
            text = _drop_sentences(text, rng, 0, at_least=8)
        text = _edit_body(text, rng, rng.randint(2, 5))
        if rng.random() < 0.7:
            title = _edit_title(title, rng, 1)
    elif mode == "far":
        text = _drop_sentences(text, rng, 1 / 3, at_least=2)
        paras = [_SENT.split(p) for p in text.split("\n")]
        text = "\n".join(" ".join(" ".join(_edit_words(s.split(), rng, rng.randint(1, 2))) for s in ss) for ss in paras)
        title = _edit_title(title, rng, 2)
        if rec.get("abstract"):
            out["abstract"] = " ".join(_edit_words(rec["abstract"].split(), rng, 1))
    out["text"], out["title"] = text, title
    return out, mode


def read_base(base_articles: int | None) -> list[dict]:
    recs = []
    for f in sorted(SHARDS.glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            recs += [json.loads(line) for line in fh if line.strip()]
    return recs[:base_articles] if base_articles else recs


def _write_round_shard(args: tuple[Path, list[tuple[dict, int]]]) -> dict:
    path, items = args
    modes: dict[str, int] = {}
    tmp = path.with_suffix(".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=6) as fh:
        for rec, q in items:
            out, mode = perturb(rec, q)
            modes[mode] = modes.get(mode, 0) + 1
            fh.write(json.dumps(out, ensure_ascii=False) + "\n")
    tmp.rename(path)
    return modes


def make_corpora(workdir: Path, scales: list[float], base_articles: int | None) -> dict[float, dict]:
    """{scale: {"shards": folder, "articles": n, "max_articles": slice or None, "copies": {mode: n}}}. Round
    shards are written once and reused. A scale below 1 is the real corpus sliced by `data.max_articles` (the
    build's deterministic slice: every stance-annotated article, the rest at random): no copies."""
    corpus = workdir / "corpus"
    rounds_dir = corpus / "rounds"
    rounds_dir.mkdir(parents=True, exist_ok=True)
    base = read_base(base_articles)
    copied = [r for r in base if r.get("split") in COPIED_SPLITS]
    n, m = len(base), len(copied)
    manifest_f = corpus / "manifest.json"
    want = {"version": GEN_VERSION, "base_articles": base_articles, "n": n, "copied": m, "shard_size": SHARD_SIZE,
            "modes": MODES}
    manifest = json.loads(manifest_f.read_text()) if manifest_f.exists() else {}
    if {k: manifest.get(k) for k in want} != json.loads(json.dumps(want)):
        shutil.rmtree(rounds_dir)
        rounds_dir.mkdir()
        manifest = dict(want, rounds={})
    t0 = time.time()
    jobs, job_round = [], []
    for r in range(1, math.ceil(max(scales))):
        if str(r) in manifest["rounds"]:
            continue
        items = []
        for j in range(n):  # round r: copies number (r-1)*n + j of the cycled train/unsplit list
            g = (r - 1) * n + j
            items.append((copied[g % m], g // m + 1))
        for s, start in enumerate(range(0, n, SHARD_SIZE)):
            jobs.append((rounds_dir / f"round{r}_{s:02d}.jsonl.gz", items[start:start + SHARD_SIZE]))
            job_round.append(r)
    if jobs:
        print(f"writing {len(jobs)} round shards ({len(set(job_round))} rounds of {n} copies) ...", flush=True)
        with ProcessPoolExecutor(min(2, os.cpu_count() or 1)) as pool:
            per_round: dict[int, dict] = {}
            for r, modes in zip(job_round, pool.map(_write_round_shard, jobs, chunksize=1)):
                for k, v in modes.items():
                    per_round.setdefault(r, {}).setdefault(k, 0)
                    per_round[r][k] += v
        for r, modes in per_round.items():
            manifest["rounds"][str(r)] = modes
        manifest_f.write_text(json.dumps(manifest, indent=2))
        print(f"  {time.time() - t0:.0f} s", flush=True)
    out = {}
    for s in sorted({math.ceil(x) for x in scales}):
        folder = corpus / f"x{s}" / "shards"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        if base_articles:
            base_dir = corpus / "base"
            if not base_dir.exists():
                base_dir.mkdir()
                for k, start in enumerate(range(0, n, SHARD_SIZE)):
                    with gzip.open(base_dir / f"base_{k:02d}.jsonl.gz", "wt", encoding="utf-8") as fh:
                        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in base[start:start + SHARD_SIZE])
            base_files = sorted(base_dir.glob("*.jsonl.gz"))
        else:
            base_files = sorted(SHARDS.glob("*.jsonl.gz"))
        for f in base_files:
            (folder / f.name).symlink_to(f)
        modes: dict[str, int] = {}
        for r in range(1, s):
            for f in sorted(rounds_dir.glob(f"round{r}_*.jsonl.gz")):
                (folder / f.name).symlink_to(f)
            for k, v in manifest["rounds"][str(r)].items():
                modes[k] = modes.get(k, 0) + v
        out[s] = {"shards": folder, "articles": n * s, "max_articles": None, "copies": modes}
    for x in scales:
        if x < 1:
            out[x] = dict(out[1], articles=round(n * x), max_articles=round(n * x))
        elif x != int(x):
            raise SystemExit(f"--scales: {x}: a scale above 1 must be a whole number (rounds of copies)")
    return {x: out[x] for x in scales}


# --- running and measuring one stage -----------------------------------------------------------------------


def _mem_kib(pid: int) -> tuple[int, int]:
    """(anonymous + shmem resident KiB, file-backed resident KiB) of a process, from /proc/PID/status: cheap to
    read, unlike smaps_rollup (PSS), whose walk of a multi-GB process takes 0.1 s or more on this host."""
    anon = file = 0
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("RssAnon:", "RssShmem:")):
                    anon += int(line.split()[1])
                elif line.startswith("RssFile:"):
                    file = int(line.split()[1])
    except OSError:
        pass
    return anon, file


def _tree(pid: int) -> list[int]:
    import psutil

    try:
        p = psutil.Process(pid)
        return [pid] + [c.pid for c in p.children(recursive=True)]
    except psutil.Error:
        return []


def _mem_available_mib() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def measure(cmd: list[str], env: dict, timeout: float, log: Path, interval: float = 0.1) -> dict:
    """Run cmd (its own process group), sample the memory of its process tree (every process's anonymous memory
    plus the main process's file pages: shared libraries counted once), wait4 for its rusage. Killed at
    `timeout`."""
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(log, "w") as err:
        p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
                             start_new_session=True)
        peak = {"tree_kib": 0, "procs": 0}
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                pids = _tree(p.pid)
                mems = [_mem_kib(q) for q in pids]
                tot = sum(a for a, _ in mems) + (mems[0][1] if mems else 0)
                if tot > peak["tree_kib"]:
                    peak["tree_kib"], peak["procs"] = tot, len(pids)
                done.wait(interval)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        timer = threading.Timer(timeout, lambda: os.killpg(p.pid, 9))
        timer.start()
        out = p.stdout.read()
        _, status, ru = os.wait4(p.pid, 0)
        timer.cancel()
        done.set()
        th.join()
    wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    return {"rc": rc, "killed_at_deadline": rc == -9 and wall >= timeout - 1, "wall_s": round(wall, 2),
            "cpu_s": round(ru.ru_utime + ru.ru_stime, 1), "peak_tree_mib": round(peak["tree_kib"] / 1024, 1),
            "procs_at_peak": peak["procs"], "max_process_rss_mib": round(ru.ru_maxrss / 1024, 1),
            "loadavg_before": round(load0, 2), "loadavg_after": round(os.getloadavg()[0], 2), "stdout": out}


# --- the build, with each step timed (run in the child) -----------------------------------------------------


def child_build(step_file: str, argv: list[str]) -> int:
    """`vigie data build ARGV` with timers around each step of training.data.build and of the dedup."""
    import resource

    import psutil

    from training import cli
    from training.data import build, dedup

    steps: dict[str, dict] = {}
    me = psutil.Process()

    def cpu() -> float:  # this process and its waited-for children (the shard readers, once the pool is shut)
        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    def record(name: str, dt: float, dcpu: float) -> None:
        s = steps.setdefault(name, {"seconds": 0.0, "cpu_s": 0.0, "calls": 0})
        s["seconds"] += dt
        s["cpu_s"] += dcpu
        s["calls"] += 1
        s["rss_after_mib"] = round(me.memory_info().rss / 2**20, 1)
        s["peak_rss_so_far_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)

    def timed(module, attr: str, name: str) -> None:
        f = getattr(module, attr)

        def wrapper(*a, **k):
            t, c = time.perf_counter(), cpu()
            try:
                return f(*a, **k)
            finally:
                record(name, time.perf_counter() - t, cpu() - c)

        setattr(module, attr, wrapper)

    for attr, name in [("input_stamp", "1a stamp inputs (sha256)"), ("read_inputs", "1b read shards"),
                       ("fit_boilerplate", "2a fit boilerplate"), ("label_rows", "2b label rows"),
                       ("normalize_many", "3a dedup keys (build)"), ("find_duplicates", "3b find duplicates"),
                       ("assign_splits", "4 assign splits"), ("resolve_groups", "5 resolve groups"),
                       ("build_stats", "6a stats (fingerprint)"), ("write_dataset", "6b write dataset")]:
        timed(build, attr, name)
    # inside find_duplicates (these names are looked up in dedup's namespace at call time)
    timed(dedup, "normalize_many", "3b.1 normalise bodies+titles")
    timed(dedup, "shingle_hashes", "3b.2 shingle hashes")
    sig_time = [0.0, 0.0]
    sig_f = dedup.minhash_signature

    def signature(*a):
        t, c = time.perf_counter(), time.process_time()
        try:
            return sig_f(*a)
        finally:
            sig_time[0] += time.perf_counter() - t
            sig_time[1] += time.process_time() - c

    dedup.minhash_signature = signature
    lsh_time = {"insert": 0.0, "query": 0.0, "insert_cpu": 0.0, "query_cpu": 0.0, "candidates": 0}
    base_lsh = dedup.MinHashLSH

    class TimedLSH(base_lsh):
        def insert(self, *a, **k):
            t, c = time.perf_counter(), time.process_time()
            try:
                return super().insert(*a, **k)
            finally:
                lsh_time["insert"] += time.perf_counter() - t
                lsh_time["insert_cpu"] += time.process_time() - c

        def query(self, *a, **k):
            t, c = time.perf_counter(), time.process_time()
            try:
                got = super().query(*a, **k)
                lsh_time["candidates"] += len(got)
                return got
            finally:
                lsh_time["query"] += time.perf_counter() - t
                lsh_time["query_cpu"] += time.process_time() - c

    dedup.MinHashLSH = TimedLSH
    try:
        rc = cli.main(["data", "build", *argv])
    finally:
        steps["3b.3 minhash signatures"] = {"seconds": sig_time[0], "cpu_s": sig_time[1]}
        steps["3b.4 lsh insert"] = {"seconds": lsh_time["insert"], "cpu_s": lsh_time["insert_cpu"]}
        steps["3b.5 lsh query"] = {"seconds": lsh_time["query"], "cpu_s": lsh_time["query_cpu"],
                                   "candidates": lsh_time["candidates"]}
        if "3b find duplicates" in steps:
            steps["3b.6 exact keys, pair checks (rest)"] = {
                k: steps["3b find duplicates"][k] - sum(steps.get(n, {}).get(k, 0) for n in steps if n.startswith("3b."))
                for k in ("seconds", "cpu_s")}
        Path(step_file).write_text(json.dumps(steps, indent=1))
    return rc


def train_substeps(stderr: str) -> dict:
    """Train's own timings, from what it says on stderr."""
    out: dict = {}
    m = re.search(r"word vocabulary: (\d+) n-grams of (\d+) articles in ([\d.]+) s", stderr)
    if m:
        out["word vocabulary"] = {"seconds": float(m[3]), "n_grams": int(m[1]), "articles": int(m[2])}
    for task in ("topic", "stance"):
        rows = re.search(rf"\[{task}\] fitting \S+ on (\d+) rows", stderr)
        done = re.search(rf"\[{task}\] done in ([\d.]+) s", stderr)
        if done:
            out[f"{task} fit + calibrate"] = {"seconds": float(done[1]), "rows": int(rows[1]) if rows else None}
    return out


# --- fitting and reporting ----------------------------------------------------------------------------------


def exponent(ns: list[float], ys: list[float]) -> float | None:
    pts = [(n, y) for n, y in zip(ns, ys) if y and y > 0]
    if len(pts) < 2:
        return None
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def predict(ns: list[float], ys: list[float], n: float, default_exp: float = 1.2) -> float | None:
    """y at n from the power law through the measured points (anchored at the largest)."""
    pts = [(a, b) for a, b in zip(ns, ys) if b]
    if not pts:
        return None
    e = exponent(ns, ys) if len(pts) >= 2 else default_exp
    e = max(e, 1.0) if e is not None else default_exp  # never predict less than linear growth
    n0, y0 = max(pts)
    return y0 * (n / n0) ** e


def plot(results: dict, out: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    panels = ((axes[0], "wall_s", "time", "wall time (s)"), (axes[1], "cpu_s", "cpu", "CPU time, all processes (s)"),
              (axes[2], "peak_tree_mib", "memory", "peak memory, process tree (MiB)"))
    for stage, marker in (("build", "o"), ("train", "s")):
        ok = fit_rows(results, stage)
        if not ok:
            continue
        ns = [r["articles"] for r in ok]
        ex = results["exponents"].get(stage, {})
        others = [r for r in results["runs"] if r["stage"] == stage and r.get("rc") == 0 and r not in ok]
        for ax, key, what, _ in panels:
            e = ex.get(what)
            line, = ax.loglog(ns, [r[key] for r in ok], marker=marker,
                              label=f"{stage} (exponent {e:.2f})" if e is not None else stage)
            if others:
                ax.loglog([r["articles"] for r in others], [r[key] for r in others], marker=marker, ls="none",
                          mfc="none", color=line.get_color(), label=f"{stage} of a slice of 1x (not fitted)")
    for ax, _, _, ylabel in panels:
        if not ax.get_lines():
            continue
        x0 = min(line.get_xdata().min() for line in ax.get_lines())
        x1 = max(line.get_xdata().max() for line in ax.get_lines())
        y0 = min(line.get_ydata().min() for line in ax.get_lines())
        xs = np.array([x0, x1], dtype=float)
        ax.loglog(xs, y0 * xs / x0, ":", color="grey", label="slope 1 (linear)")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("articles in the corpus")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"vigie: cost against corpus size (OrangeSum and perturbed copies; {results['host'].get('cpu', '')}, "
                 f"{results['host']['cpus']} cores, shared)", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)


def fit_rows(results: dict, stage: str) -> list[dict]:
    """The measured runs a stage's exponents are fitted on. A build below 1x reads the whole 1x corpus and then
    slices it (`data.max_articles`): its read cost is the 1x one, so builds are fitted on the scales >= 1 (all
    of them when fewer than two were measured). Train reads the built dataset: every scale counts."""
    ok = [r for r in results["runs"] if r["stage"] == stage and r.get("rc") == 0]
    whole = [r for r in ok if not r.get("max_articles")]
    return whole if stage == "build" and len(whole) >= 2 else ok


def _fmt_scale(s: float) -> str:
    return f"{s:g}x"


def report(results: dict) -> None:
    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    print(f"\n{'scale':>6} {'articles':>9} {'stage':<6} {'wall s':>8} {'CPU s':>8} {'peak MiB':>9} {'max proc MiB':>12}")
    for r in results["runs"]:
        head = f"{_fmt_scale(r['scale']):>6} {r['articles']:>9} {r['stage']:<6}"
        if r.get("rc") == 0:
            print(f"{head} {r['wall_s']:>8.1f} {r['cpu_s']:>8.0f} {r['peak_tree_mib']:>9.0f} {r['max_process_rss_mib']:>12.0f}")
        else:
            why = r.get("skipped") or f"failed, rc {r.get('rc')}"
            print(f"{head} not measured: {why}")
    print("\ngrowth exponents (least-squares slope of log y against log articles):")
    for stage, e in results["exponents"].items():
        print(f"  {stage:<6} wall {fmt(e['time'])}  CPU {fmt(e['cpu'])}  memory {fmt(e['memory'])}"
              + (f"  (last two scales: wall {fmt(e.get('time_last_segment'))}, CPU {fmt(e.get('cpu_last_segment'))}, "
                 f"memory {fmt(e.get('memory_last_segment'))})" if "time_last_segment" in e else ""))
        ok = fit_rows(results, stage)
        for k, v in e["steps"].items():
            cpu = [r["steps"][k].get("cpu_s") for r in ok if k in r.get("steps", {})]
            wall = [r["steps"][k]["seconds"] for r in ok if k in r.get("steps", {})]
            per = ", ".join(f"{w:.1f}" + (f"/{c:.1f}" if c is not None else "") for w, c in zip(wall, cpu))
            print(f"      {k:<36} {fmt(v):>5}   wall/CPU s per scale: {per}")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--_child-build":
        sys.path.insert(0, str(REPO))
        sys.exit(child_build(sys.argv[2], sys.argv[3:]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scales", default="1,2,4,8",
                    help="comma-separated multiples of the corpus (whole numbers above 1; below 1: a slice)")
    ap.add_argument("--stages", default="build,train", help="build, train or both")
    ap.add_argument("--train-scales", default=None, help="train only at these scales (default: every scale)")
    ap.add_argument("--workdir", default="/tmp/vigie-scaling")
    ap.add_argument("--config", default=str(CONFIG))
    ap.add_argument("--base-articles", type=int, default=None, help="copy only the first N articles (smoke runs)")
    ap.add_argument("--override", action="append", default=[], help="key=value for both stages")
    ap.add_argument("--train-override", action="append", default=None,
                    help="key=value for train only (default: evaluate.oof_folds=0)")
    ap.add_argument("--budget-min", type=float, default=60, help="skip/kill stages that would end past this")
    ap.add_argument("--mem-fraction", type=float, default=0.85, help="skip a stage predicted above this of MemAvailable")
    ap.add_argument("--keep-datasets", action="store_true", help="keep the built datasets (GBs at 8x)")
    ap.add_argument("--json", default=None, help="default: <workdir>/scaling.json")
    ap.add_argument("--plot", default=str(REPO / "docs" / "figures" / "scaling.png"))
    ap.add_argument("--replot", metavar="JSON", help="only print the table and redraw the plot of a finished run")
    args = ap.parse_args()
    if args.replot:
        results = json.loads(Path(args.replot).read_text())
        report(results)
        plot(results, Path(args.plot))
        return
    t_start = time.time()
    deadline = t_start + 60 * args.budget_min
    scales = sorted({float(s) for s in args.scales.split(",")})
    scales = [int(s) if s == int(s) else s for s in scales]
    train_scales = {float(s) for s in args.train_scales.split(",")} if args.train_scales else set(map(float, scales))
    stages = [s for s in ("build", "train") if s in args.stages.split(",")]
    train_over = args.train_override if args.train_override is not None else ["evaluate.oof_folds=0"]
    work = Path(args.workdir).resolve()
    if work == REPO or REPO in work.parents:
        sys.exit("--workdir must be outside the repository")
    work.mkdir(parents=True, exist_ok=True)
    json_out = Path(args.json) if args.json else work / "scaling.json"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    corpora = make_corpora(work, scales, args.base_articles)
    t_corpus = time.time() - t_start
    if "train" in stages:  # the experiment's artifacts under workdir, not ./mlruns of the repository
        from mlflow import MlflowClient

        client = MlflowClient(env["MLFLOW_TRACKING_URI"])
        if client.get_experiment_by_name(EXPERIMENT) is None:
            client.create_experiment(EXPERIMENT, artifact_location=(work / "artifacts").as_uri())
    vigie = [sys.executable, "-m", "training.cli"]
    results: dict = {"host": {"cpus": os.cpu_count(), "mem_total_mib": round(os.sysconf("SC_PAGE_SIZE") *
                     os.sysconf("SC_PHYS_PAGES") / 2**20), "nice": os.nice(0)},
                     "command": " ".join(sys.argv), "config": args.config, "train_overrides": train_over,
                     "overrides": args.override, "base_articles": args.base_articles,
                     "corpus_seconds": round(t_corpus, 1), "runs": []}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        results["host"]["cpu"] = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass

    def measured(stage: str) -> list[dict]:
        return fit_rows(results, stage)

    def forecast(stage: str, n: float, key: str) -> float | None:
        done = measured(stage)
        return predict([r["articles"] for r in done], [r[key] for r in done], n)

    # the builds are the benchmark's first duty: every build scale runs (the time budget never skips or kills one);
    # train runs where the budget left allows: first at the scales <= 1 (each right after its build), then the
    # larger builds, then train at the larger scales
    wanted = [(s, st) for s in scales for st in stages if st == "build" or float(s) in train_scales]
    plan = ([(s, st) for s, st in wanted if s <= 1] + [(s, st) for s, st in wanted if s > 1 and st == "build"]
            + [(s, st) for s, st in wanted if s > 1 and st == "train"])
    for k, (s, stage) in enumerate(plan):
        c = corpora[s]
        name = f"orangesum-x{s:g}"
        data_over = [f"data.sources=[{{path: {c['shards']}, name: orangesum}}, {{path: {REPO / 'seeds'}, name: seeds}}]",
                     f"data.output_dir={work / 'processed'}", f"data.name={name}", *args.override]
        if c["max_articles"]:
            data_over.append(f"data.max_articles={c['max_articles']}")
        built = work / "processed" / name
        row = {"scale": s, "articles": c["articles"], "stage": stage, "copies": c["copies"],
               "max_articles": c["max_articles"]}
        t_pred = forecast(stage, c["articles"], "wall_s")
        m_pred = forecast(stage, c["articles"], "peak_tree_mib")
        left = deadline - time.time()
        avail = _mem_available_mib()
        row["predicted_wall_s"] = round(t_pred, 1) if t_pred else None
        row["predicted_peak_mib"] = round(m_pred, 1) if m_pred else None
        why = None
        if stage == "train" and t_pred and t_pred > left:
            why = f"predicted {t_pred:.0f} s from the scales measured, {max(left, 0):.0f} s left in the budget"
        elif m_pred and m_pred > args.mem_fraction * avail:
            why = f"predicted {m_pred:.0f} MiB, {avail:.0f} MiB available"
        elif stage == "train" and not (built / "stats.json").exists():
            why = "no build of this scale to train on (run the build stage first, or --keep-datasets)"
        if why:
            row["skipped"] = why
            print(f"{_fmt_scale(s)} {stage}: skipped: {why}", flush=True)
            results["runs"].append(row)
        else:
            log = work / f"x{s:g}_{stage}.stderr"
            if stage == "build":
                steps_f = work / f"x{s:g}_build_steps.json"
                cmd = [sys.executable, str(Path(__file__).resolve()), "--_child-build", str(steps_f),
                       args.config, *data_over, "--quiet"]
            else:
                cmd = vigie + ["train", args.config, *data_over, f"experiment={EXPERIMENT}", *train_over]
            print(f"{_fmt_scale(s)} {stage}: {c['articles']} articles ... (predicted {row['predicted_wall_s']} s, "
                  f"{row['predicted_peak_mib']} MiB; {left:.0f} s left)", flush=True)
            m = measure(cmd, env, max(left, 1) if stage == "train" else 4 * 3600, log)
            stdout = m.pop("stdout")
            row.update(m)
            stderr = log.read_text(errors="replace")
            if m["rc"] != 0:
                row["error"] = stderr[-2000:]
                print(f"  failed (rc {m['rc']}{', killed at the deadline' if m['killed_at_deadline'] else ''}):\n"
                      f"{stderr[-1500:]}", flush=True)
            elif stage == "build":
                stats = json.loads((built / "stats.json").read_text())
                row["rows"] = {k: v["rows"] for k, v in stats["splits"].items()}
                row["dedup"] = stats["dedup"]
                row["steps"] = json.loads(steps_f.read_text())
                row["dataset_mib"] = round(sum(f.stat().st_size for f in built.rglob("*") if f.is_file()) / 2**20, 1)
            else:
                if "building dataset" in stderr:
                    row["note"] = "train rebuilt the dataset (it was stale): its time includes a build"
                row["steps"] = train_substeps(stderr)
                try:
                    row["metrics"] = json.loads(stdout[stdout.index("{"):])["metrics"]
                except ValueError:
                    pass
            if m["rc"] == 0:
                print(f"  {m['wall_s']:.1f} s wall, {m['cpu_s']:.0f} s CPU, peak {m['peak_tree_mib']:.0f} MiB "
                      f"(largest process {m['max_process_rss_mib']:.0f} MiB), load {m['loadavg_before']}"
                      f"->{m['loadavg_after']}", flush=True)
            results["runs"].append(row)
            json_out.write_text(json.dumps(results, indent=1, default=str))
        last_use = max(j for j, (x, _) in enumerate(plan) if x == s)
        if k == last_use and built.exists() and not args.keep_datasets:
            shutil.rmtree(built)
    exps: dict = {}
    for stage in stages:
        ok = fit_rows(results, stage)
        ns = [r["articles"] for r in ok]
        exps[stage] = {key: exponent(ns, [r[col] for r in ok])
                       for key, col in (("time", "wall_s"), ("cpu", "cpu_s"), ("memory", "peak_tree_mib"))}
        if len(ok) >= 3:  # the last two scales alone: the local growth at the largest sizes
            for key, col in (("time", "wall_s"), ("cpu", "cpu_s"), ("memory", "peak_tree_mib")):
                exps[stage][f"{key}_last_segment"] = exponent(ns[-2:], [r[col] for r in ok[-2:]])
        names = sorted({k for r in ok for k in r.get("steps", {})})
        # steps by CPU time where it was taken (load-independent on a shared host), else by wall time
        exps[stage]["steps"] = {k: exponent([r["articles"] for r in ok if k in r["steps"]],
                                            [r["steps"][k].get("cpu_s", r["steps"][k]["seconds"]) for r in ok
                                             if k in r["steps"]]) for k in names}
    results["exponents"] = exps
    results["total_seconds"] = round(time.time() - t_start, 1)
    json_out.write_text(json.dumps(results, indent=1, default=str))
    report(results)
    print(f"\ntotal {results['total_seconds']:.0f} s (corpora {t_corpus:.0f} s); figures in {json_out}")
    if any(r.get("rc") == 0 for r in results["runs"]):
        plot(results, Path(args.plot))
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
