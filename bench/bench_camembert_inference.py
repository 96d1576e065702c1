"""CPU inference throughput of a base-size CamemBERT with our two heads: PyTorch fp32, PyTorch bf16 autocast,
ONNX Runtime fp32, ONNX Runtime int8 (dynamic quantisation, as `model.inference=onnx_int8` ships it).

Random weights and random token ids (speed does not depend on either), batch 16 x 256 tokens by default:

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_camembert_inference.py [--batch 16] [--tokens 256] [--iters 5]

Prints one table (docs/s = documents per second, median over the timed iterations).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(fn, warmup: int, iters: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="default: torch's default (the cores)")
    args = ap.parse_args(argv)

    import onnxruntime as ort
    import torch
    from transformers import CamembertConfig, CamembertModel

    from training.models.camembert import build_model, export_onnx, onnx_module, quantize_int8

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    # camembert-base's shape: CamembertConfig defaults (12 layers, 768 hidden, 12 heads) with its vocabulary size
    config = CamembertConfig(vocab_size=32005, max_position_embeddings=514, type_vocab_size=1,
                             pad_token_id=1, bos_token_id=5, eos_token_id=6)
    model = build_model(CamembertModel(config, add_pooling_layer=False), {"topic": 12, "stance": 3}).eval()
    n_params = sum(p.numel() for p in model.parameters())
    ids = torch.randint(10, config.vocab_size, (args.batch, args.tokens), dtype=torch.long)
    ids[:, 0] = 5
    ids[:, -1] = 6
    mask = torch.ones_like(ids)
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}

    rows = []

    def record(name: str, secs: list[float]) -> None:
        med = statistics.median(secs)
        rows.append((name, args.batch / med, med * 1000))
        print(f"  {name}: {args.batch / med:.2f} docs/s", file=sys.stderr, flush=True)

    print(f"CamemBERT-base shape ({n_params / 1e6:.0f} M parameters), batch {args.batch} x {args.tokens} tokens, "
          f"{threads} threads, {args.iters} timed iterations", file=sys.stderr, flush=True)

    def torch_run(bf16: bool):
        def run():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                model.logits(ids, mask)
        return run

    record("PyTorch fp32", timed(torch_run(False), args.warmup, args.iters))
    record("PyTorch bf16 autocast", timed(torch_run(True), args.warmup, args.iters))

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "model.onnx"
        int8 = Path(tmp) / "model.int8.onnx"
        t0 = time.time()
        module, names = onnx_module(model)
        export_onnx(module, fp32, names)
        quantize_int8(fp32, int8)  # what model.inference=onnx_int8 ships
        print(f"  export + quantisation: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        topic = {}
        for name, path in (("ONNX Runtime fp32", fp32), ("ONNX Runtime int8 (dynamic)", int8)):
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            record(name, timed(lambda s=sess: s.run(None, feeds), args.warmup, args.iters))
            topic[name] = sess.run(None, feeds)[0]
        diff = np.abs(topic["ONNX Runtime int8 (dynamic)"] - topic["ONNX Runtime fp32"]).max()
        print(f"  int8 vs fp32 topic logits: max abs diff {diff:.4f}", file=sys.stderr)

    base = rows[0][1]
    print(f"\nCamemBERT-base inference, CPU, batch {args.batch} x {args.tokens} tokens, {threads} threads "
          f"({os.cpu_count()} cores visible), median of {args.iters}")
    print(f"| {'backend':<28} | {'docs/s':>7} | {'ms/batch':>9} | {'vs fp32':>7} |")
    print(f"|{'-' * 30}|{'-' * 9}|{'-' * 11}|{'-' * 9}|")
    for name, dps, ms in rows:
        print(f"| {name:<28} | {dps:>7.2f} | {ms:>9.0f} | {dps / base:>6.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
