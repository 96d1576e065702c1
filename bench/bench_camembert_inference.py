"""CPU inference throughput of a base-size CamemBERT with our two heads: PyTorch fp32, PyTorch bf16 autocast,
ONNX Runtime fp32, ONNX Runtime int8 (dynamic quantisation, as `model.inference=onnx_int8` ships it), and the
served path itself: the saved model folder loaded by the pyfunc (`VigieModel`), raw article texts in, cleaning,
tokenisation, ONNX Runtime int8 and probabilities out.

Random weights (speed does not depend on them), the real architecture (12 layers, 768 hidden, camembert-base's
vocabulary size), batch 16 x 256 tokens by default; the served row feeds 16 OrangeSum `train` articles long enough
to fill 256 tokens with a tokenizer trained on the fly:

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_camembert_inference.py [--batch 16] [--tokens 256] [--iters 10]

Each backend is timed in a fresh process: PyTorch's OpenMP workers keep spinning after its last op and would
otherwise steal the two cores from ONNX Runtime. Prints one table (docs/s = documents per second, median over the
timed iterations, and the best iteration).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARDS = ROOT.parent / "shared" / "data" / "orangesum" / "shards"
HEADS = {"topic": 12, "stance": 3}
BACKENDS = {
    "torch_fp32": "PyTorch fp32",
    "torch_bf16": "PyTorch bf16 autocast",
    "ort_fp32": "ONNX Runtime fp32",
    "ort_int8": "ONNX Runtime int8 (dynamic)",
    "served": "served path: pyfunc, int8",
}


def timed(fn, warmup: int, iters: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def long_train_articles(n: int, min_chars: int = 3000) -> list[str]:
    """n OrangeSum `train` articles long enough for 256 tokens, read as the build reads them (test/valid untouched)."""
    from training.data.readers import read_paths

    texts = [a.text for a in itertools.islice(
        (a for a in read_paths([SHARDS], lambda skip: None) if a.origin_split == "train" and len(a.text) >= min_chars),
        n)]
    if len(texts) < n:
        raise SystemExit(f"{SHARDS}: fewer than {n} train articles of {min_chars}+ characters")
    return texts


def prepare(tmp: Path, args) -> None:
    """Save the served model folder (encoder, tokenizer, heads, meta, int8 ONNX), an fp32 ONNX file and the inputs."""
    import torch
    from transformers import CamembertConfig, CamembertModel, CamembertTokenizer

    from training.models.camembert import build_model, export_onnx, quantize_int8, save_model
    from training.models.family import write_meta
    from training.models.tiny import train_unigram

    torch.manual_seed(0)
    # camembert-base's shape: CamembertConfig defaults (12 layers, 768 hidden, 12 heads) with its vocabulary size
    config = CamembertConfig(vocab_size=32005, max_position_embeddings=514, type_vocab_size=1,
                             pad_token_id=1, bos_token_id=5, eos_token_id=6)
    model = build_model(CamembertModel(config, add_pooling_layer=False), HEADS).eval()
    texts = long_train_articles(args.batch)
    t0 = time.time()
    tokenizer = CamembertTokenizer(vocab=train_unigram(iter(texts * 4), 2000), additional_special_tokens=[],
                                   model_max_length=512)
    model_dir = tmp / "model"
    save_model(model, tokenizer, model_dir)
    write_meta(model_dir, "camembert", {t: [f"{t}_{i}" for i in range(k)] for t, k in HEADS.items()},
               list(HEADS), None, {"inference": "onnx_int8", "max_length": args.tokens, "truncation": "head"})
    export_onnx(model, tmp / "model.onnx")
    quantize_int8(tmp / "model.onnx", model_dir / "model.int8.onnx")
    print(f"  model folder, export + quantisation: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    (tmp / "texts.json").write_text(json.dumps(texts, ensure_ascii=False))
    ids = torch.randint(10, config.vocab_size, (args.batch, args.tokens), dtype=torch.long)
    ids[:, 0], ids[:, -1] = 5, 6
    np.save(tmp / "ids.npy", ids.numpy())
    print(f"  {sum(p.numel() for p in model.parameters()) / 1e6:.0f} M parameters", file=sys.stderr, flush=True)


def worker(backend: str, tmp: Path, args) -> list[float]:
    """Time one backend in this (fresh) process."""
    ids = np.load(tmp / "ids.npy")
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if backend.startswith("torch"):
        import torch

        from training.models.camembert import load_model

        if args.threads:
            torch.set_num_threads(args.threads)
        model = load_model(tmp / "model", json.loads((tmp / "model" / "meta.json").read_text()))
        t_ids, t_mask = torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"])
        bf16 = backend == "torch_bf16"

        def run():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                model.logits(t_ids, t_mask)
        return timed(run, args.warmup, args.iters)
    if backend.startswith("ort"):
        from training.models.camembert import onnx_session

        path = tmp / "model.onnx" if backend == "ort_fp32" else tmp / "model" / "model.int8.onnx"
        sess = onnx_session(path, args.threads)  # the session the served scorer builds
        return timed(lambda: sess.run(None, feeds), args.warmup, args.iters)
    import pandas as pd

    from training.models.camembert import encode
    from training.models.pyfunc import VigieModel

    model = VigieModel()
    model._load(tmp / "model")
    frame = pd.DataFrame({"text": json.loads((tmp / "texts.json").read_text())})
    scorer = model.scorer
    seqs = [len(s) for s in encode(scorer.tokenizer, list(frame["text"]), scorer.max_length, scorer.truncation,
                                   scorer.head_tokens)]
    if min(seqs) < args.tokens:
        raise SystemExit(f"served inputs: shortest is {min(seqs)} tokens, want {args.tokens}")
    return timed(lambda: model.predict(None, frame), args.warmup, args.iters)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="default: each runtime's default (the cores)")
    ap.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated, from {','.join(BACKENDS)}")
    ap.add_argument("--worker", choices=list(BACKENDS), help=argparse.SUPPRESS)
    ap.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args.worker, args.dir, args)))
        return 0

    backends = args.backends.split(",")
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        ap.error(f"--backends: unknown {', '.join(unknown)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        prepare(Path(tmp), args)
        for b in backends:
            cmd = [sys.executable, __file__, "--worker", b, "--dir", tmp, "--batch", str(args.batch),
                   "--tokens", str(args.tokens), "--iters", str(args.iters), "--warmup", str(args.warmup)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            secs = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            med = statistics.median(secs)
            rows.append((BACKENDS[b], args.batch / med, args.batch / min(secs), med * 1000))
            print(f"  {BACKENDS[b]}: {args.batch / med:.2f} docs/s", file=sys.stderr, flush=True)

    base = rows[0][1]
    print(f"\nCamemBERT-base inference, CPU, batch {args.batch} x {args.tokens} tokens, "
          f"{args.threads or 'default'} threads ({os.cpu_count()} cores visible), median of {args.iters}")
    print(f"| {'backend':<28} | {'docs/s':>7} | {'best':>6} | {'ms/batch':>9} | {'vs first':>8} |")
    print(f"|{'-' * 30}|{'-' * 9}|{'-' * 8}|{'-' * 11}|{'-' * 10}|")
    for name, dps, best, ms in rows:
        print(f"| {name:<28} | {dps:>7.2f} | {best:>6.2f} | {ms:>9.0f} | {dps / base:>7.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
