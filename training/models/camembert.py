"""CamemBERT family: one pretrained encoder, one classification head per task (topic, stance).

- `load_pretrained(name)`: tokenizer + encoder from a hub name or a local folder (a copy of camembert-base, or the
  tiny model of `vigie model tiny`), through the same `from_pretrained` path. Offline, a hub name that is not in
  the local cache fails at once with an `InputError` that says how to point at a local copy.
- `MultiTaskCamembert`: the encoder's <s> state feeds each head; the loss is the weighted sum of per-task
  cross-entropies, each masked to the rows labelled for that task (label -1: unlabelled), so an article without a
  stance label still trains the topic head.
- `encode`: tokenisation with `head` or `head_tail` truncation.
- `load_scorer(model_dir, meta)`: what the pyfunc of `pyfunc.py` serves — PyTorch, or ONNX Runtime int8.

Training is `camembert_family.py` (with `camembert_trainer.py` and `checkpoints.py`); the saved folder it writes
is described there.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from training.errors import InputError

ENCODER_DIR = "encoder"
HEADS_FILE = "heads.safetensors"
ONNX_FILE = "model.int8.onnx"
HUB_PROBE_TIMEOUT_S = 3.0


# --- loading the pretrained encoder ---------------------------------------------------------------------------


def _truthy(v: str | None) -> bool:
    return (v or "").strip().lower() in {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))


def _hub_endpoint() -> str:
    try:
        from huggingface_hub import constants

        return constants.ENDPOINT  # where the hub client will actually go
    except Exception:  # noqa: BLE001
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def _hub_reachable(name: str, timeout_s: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """None when the hub answers one HTTP request within timeout_s (any status: a 401 or 404 is an answer), else
    the reason. Replaces the hub client's retries, which take the better part of a minute to give up."""
    import urllib.error
    import urllib.request

    url = f"{_hub_endpoint().rstrip('/')}/{name}/resolve/main/config.json"
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout_s).close()
        return None
    except urllib.error.HTTPError:
        return None
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return f"{urlparse(url).netloc} does not answer: {reason}"


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def _unavailable(name: str, reason: str) -> InputError:
    short = Path(name).name
    return InputError(
        f"model.pretrained={name}: not a local folder, not in the Hugging Face cache, and the weights cannot be "
        f"downloaded ({reason}). Download them on a machine with internet access, e.g. `huggingface-cli download "
        f"{name} --local-dir /path/to/{short}`, copy the folder here and point the config at it: "
        f"model.pretrained=/path/to/{short}")


def resolve_pretrained(name: str) -> tuple[str, bool]:
    """(what to pass to from_pretrained, local_files_only). Raises InputError at once when the weights are
    neither a local folder nor in the hub cache and cannot be downloaded."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise InputError(f"model.pretrained={name}: folder has no config.json (not a transformers model folder)")
        return str(path), True
    if path.exists() or _looks_like_path(name):
        raise InputError(f"model.pretrained={name}: no such model folder (`vigie model tiny --out {name}` makes a "
                         "tiny one for tests; a real one is a copy of almanach/camembert-base)")
    try:  # already in the hub cache: no network needed
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
        if isinstance(cached, str):
            return name, True
    except Exception:  # noqa: BLE001 - an odd cache is just a cache miss
        pass
    if hub_offline():
        raise _unavailable(name, "HF_HUB_OFFLINE is set")
    reason = _hub_reachable(name)
    if reason:
        raise _unavailable(name, reason)
    return name, False


def load_pretrained(name: str):
    """(tokenizer, encoder) from a hub name or a local folder."""
    from transformers import AutoModel, AutoTokenizer

    source, local_only = resolve_pretrained(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        encoder = AutoModel.from_pretrained(source, local_files_only=local_only, add_pooling_layer=False)
    except (OSError, ValueError) as e:
        if source == name and not Path(name).exists():  # a hub name: an incomplete cache or a failed download
            raise _unavailable(name, str(e).splitlines()[0]) from None
        raise InputError(f"model.pretrained={name}: cannot load the model: {e}") from None
    return tokenizer, encoder


# --- tokenisation -----------------------------------------------------------------------------------------------


def special_layout(tokenizer) -> tuple[list[int], list[int]]:
    """The special token ids the tokenizer puts before and after one sequence (CamemBERT: [<s>], [</s>])."""
    body = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for i in range(len(full) - len(body) + 1):
        if full[i : i + len(body)] == body:
            return full[:i], full[i + len(body) :]
    raise ValueError("cannot find the special-token layout of the tokenizer")


def encode(tokenizer, texts: list[str], max_length: int, truncation: str = "head",
           head_tokens: int = 128) -> list[list[int]]:
    """Token ids per text, special tokens included, at most max_length. `head` keeps the start; `head_tail` keeps
    head_tokens from the start and the rest of the budget from the end (the conclusion of a news article often
    carries its stance)."""
    if truncation == "head":
        return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    if truncation != "head_tail":
        raise ValueError(f"unknown truncation {truncation!r}")
    prefix, suffix = special_layout(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    head = min(head_tokens, budget)
    tail = budget - head
    ids = tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    out = []
    for x in ids:
        if len(x) > budget:
            x = x[:head] + (x[len(x) - tail :] if tail else [])
        out.append(prefix + x + suffix)
    return out


# --- the model ----------------------------------------------------------------------------------------------------


def _torch():
    import torch

    return torch


def multitask_loss(logits: dict, labels: dict, task_weights: dict[str, float], class_weights: dict | None = None):
    """sum_t w_t * CE_t, CE_t the (class-weighted) mean over the rows whose label for t is >= 0 (0 when a batch has
    none). No host sync, no NaN, and every head stays in the graph (DDP needs all parameters used)."""
    import torch.nn.functional as F

    total = sum(lg.sum() * 0.0 for lg in logits.values())
    for task, lg in logits.items():
        y = labels.get(task)
        if y is None:
            continue
        valid = y >= 0
        y0 = y.clamp(min=0)
        per_row = F.cross_entropy(lg.float(), y0, reduction="none")
        cw = (class_weights or {}).get(task)
        w = valid.to(per_row.dtype) * (cw.to(per_row.device)[y0] if cw is not None else 1.0)
        total = total + task_weights.get(task, 1.0) * (per_row * w).sum() / w.sum().clamp(min=1e-12)
    return total


def _head(hidden: int, n_labels: int, dropout: float):
    nn = _torch().nn
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.Tanh(), nn.Dropout(dropout),
                         nn.Linear(hidden, n_labels))


@functools.lru_cache(maxsize=None)
def _model_class():
    """The nn.Module class, built on first use: importing this module does not import torch."""
    torch = _torch()
    nn = torch.nn

    class MultiTaskCamembert(nn.Module):
        def __init__(self, encoder, heads: dict[str, int], dropout: float = 0.1,
                     task_weights: dict[str, float] | None = None,
                     class_weights: dict[str, list[float] | None] | None = None):
            super().__init__()
            self.encoder = encoder
            hidden = encoder.config.hidden_size
            self.head_sizes = dict(heads)
            self.heads = nn.ModuleDict({t: _head(hidden, n, dropout) for t, n in heads.items()})
            self.task_weights = {t: float((task_weights or {}).get(t, 1.0)) for t in heads}
            self.class_weights = {}
            for t in heads:
                cw = (class_weights or {}).get(t)
                if cw is not None:
                    self.register_buffer(f"class_weight_{t}", torch.tensor(cw, dtype=torch.float32), persistent=False)
                    self.class_weights[t] = getattr(self, f"class_weight_{t}")

        def logits(self, input_ids, attention_mask) -> dict:
            h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]
            return {t: head(h).float() for t, head in self.heads.items()}

        def forward(self, input_ids, attention_mask, topic_labels=None, stance_labels=None):
            logits = self.logits(input_ids, attention_mask)
            out = {}
            given = {t: y for t, y in (("topic", topic_labels), ("stance", stance_labels))
                     if y is not None and t in logits}
            if given:
                cws = {t: getattr(self, f"class_weight_{t}") for t in self.class_weights}
                out["loss"] = multitask_loss(logits, given, self.task_weights, cws)
            out.update({f"{t}_logits": lg for t, lg in logits.items()})
            return out

    return MultiTaskCamembert


def build_model(encoder, heads: dict[str, int], dropout: float = 0.1, task_weights=None, class_weights=None):
    return _model_class()(encoder, heads, dropout, task_weights, class_weights)


def balanced_class_weights(y: np.ndarray, n_labels: int) -> list[float]:
    """scikit-learn's 'balanced' weights n / (k * count_c) over the labelled rows; classes absent from training
    get 1 (they have no row to weigh)."""
    from sklearn.utils.class_weight import compute_class_weight

    y = y[y >= 0]
    present = np.unique(y)
    w = np.ones(n_labels)
    w[present] = compute_class_weight("balanced", classes=present, y=y)
    return w.tolist()


def save_model(model, tokenizer, model_dir: Path) -> None:
    from safetensors.torch import save_file

    model_dir = Path(model_dir)
    model.encoder.save_pretrained(model_dir / ENCODER_DIR)
    tokenizer.save_pretrained(model_dir / ENCODER_DIR)
    state = {k: v.detach().cpu().contiguous() for k, v in model.heads.state_dict().items()}
    save_file(state, str(model_dir / HEADS_FILE), metadata={"heads": ",".join(model.head_sizes)})


def load_model(model_dir: Path, meta: dict):
    from safetensors.torch import load_file
    from transformers import AutoModel

    model_dir = Path(model_dir)
    encoder = AutoModel.from_pretrained(str(model_dir / ENCODER_DIR), local_files_only=True, add_pooling_layer=False)
    heads = {t: len(meta["labels"][t]) for t in meta["heads"]}
    model = build_model(encoder, heads)
    model.heads.load_state_dict(load_file(str(model_dir / HEADS_FILE)))
    return model.eval()


# --- ONNX -----------------------------------------------------------------------------------------------------------


def onnx_module(model):
    """The two-head model as a module ONNX can trace: (input_ids, attention_mask) -> one logits tensor a task."""
    torch = _torch()
    tasks = list(model.head_sizes)

    class Wrapper(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            lg = self.m.logits(input_ids, attention_mask)
            return tuple(lg[t] for t in tasks)

    return Wrapper(model.eval().cpu()), [f"{t}_logits" for t in tasks]


@contextlib.contextmanager
def eager_attention(model):
    """Trace the encoder with its eager attention: the same softmax(QK^T / sqrt(d) + mask) V as SDPA, but SDPA
    traces to a Where + IsNaN guard on every layer, which cost about a fifth of the int8 run time here
    (benchmarks.md). The model is given back with the attention it had."""
    encoder = model.encoder
    before = encoder.config._attn_implementation
    encoder.set_attn_implementation("eager")
    try:
        yield model
    finally:
        encoder.set_attn_implementation(before)


def quantize_int8(fp32: Path, out: Path) -> None:
    """Dynamic int8 quantisation; per-channel scales are closer to fp32 than one scale per weight matrix, at
    about the same speed. (ONNX Runtime's transformer fusion before it measured no faster here: benchmarks.md.)
    reduce_range: 7-bit weights. On x86 CPUs without VNNI (AVX2 only) ONNX Runtime's u8s8 kernel saturates its
    16-bit intermediate sums with 8-bit weights: on an AVX2-only host the tiny model's int8 stance probabilities
    were 0.079 away from fp32 with 8 bits and 0.0015 with 7 (benchmarks.md). A served model runs on any host."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)


def export_onnx_int8(model, model_dir: Path, opset: int = 17) -> Path:
    """Export encoder + heads to ONNX (dynamic batch and sequence axes), quantise the weights to int8
    (dynamic quantisation: activations quantised at run time), keep only the int8 file."""
    import tempfile

    out = Path(model_dir) / ONNX_FILE
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "model.onnx"
        export_onnx(model, fp32, opset)
        quantize_int8(fp32, out)
    return out


def export_onnx(model, path: Path, opset: int = 17) -> None:
    """The two-head model to an fp32 ONNX file with TorchScript's exporter (the dynamo exporter needs
    onnxscript, which we do not ship)."""
    import warnings

    torch = _torch()
    module, output_names = onnx_module(model)
    ids = torch.randint(5, 100, (2, 16), dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    dyn = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    dyn.update({n: {0: "batch"} for n in output_names})
    with warnings.catch_warnings(), torch.no_grad(), eager_attention(model):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (ids, mask), str(path), input_names=["input_ids", "attention_mask"],
                          output_names=output_names, dynamic_axes=dyn, opset_version=opset, dynamo=False,
                          do_constant_folding=True)


def onnx_session(path: Path, threads: int | None = None):
    """The ONNX Runtime CPU session serving uses: every graph optimisation, `threads` intra-op threads
    (None: ONNX Runtime's default, the physical cores)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


# --- serving ----------------------------------------------------------------------------------------------------------


class CamembertScorer:
    """texts -> {task: (labels, [n, k] probabilities)} for the heads the model has, in batches sorted by length.
    PyTorch runs on the GPU when there is one (fp32), ONNX Runtime int8 on the CPU."""

    def __init__(self, model_dir: Path, meta: dict, batch_size: int = 32, backend: str | None = None,
                 device: str | None = None):
        from transformers import AutoTokenizer

        self.model_dir = Path(model_dir)
        self.meta = meta
        self.labels: dict[str, list[str]] = meta["labels"]
        self.heads: list[str] = list(meta["heads"])
        self.max_length = int(meta.get("max_length", 256))
        self.truncation = meta.get("truncation", "head")
        self.head_tokens = int(meta.get("head_tokens", 128))
        self.batch_size = batch_size
        self.backend = backend or meta.get("inference", "pytorch")
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir / ENCODER_DIR), local_files_only=True)
        if self.backend == "onnx_int8":
            self.session = onnx_session(self.model_dir / ONNX_FILE)
            self.outputs = [o.name for o in self.session.get_outputs()]
        elif self.backend == "pytorch":
            torch = _torch()
            self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            self.model = load_model(self.model_dir, meta).to(self.device)
        else:
            raise ValueError(f"unknown inference backend {self.backend!r}")

    def _logits(self, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        if self.backend == "onnx_int8":
            outs = self.session.run(self.outputs, {"input_ids": ids, "attention_mask": mask})
            return {name.removesuffix("_logits"): o for name, o in zip(self.outputs, outs)}
        torch = _torch()
        with torch.inference_mode():
            lg = self.model.logits(torch.from_numpy(ids).to(self.device), torch.from_numpy(mask).to(self.device))
        return {t: v.float().cpu().numpy() for t, v in lg.items()}

    def predict_proba(self, texts: list[str], dates: list[str | None] | None = None) -> dict[str, tuple[list[str], np.ndarray]]:
        """dates: accepted for the family contract; the encoder reads the text alone."""
        from scipy.special import softmax

        texts = list(texts)
        out = {t: np.zeros((len(texts), len(self.labels[t])), dtype=np.float64) for t in self.heads}
        if not texts:
            return {t: (self.labels[t], p) for t, p in out.items()}
        seqs = encode(self.tokenizer, texts, self.max_length, self.truncation, self.head_tokens)
        order = np.argsort([len(s) for s in seqs], kind="stable")
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = self.tokenizer.pad({"input_ids": [seqs[i] for i in idx]}, return_tensors="np")
            ids, mask = batch["input_ids"].astype(np.int64), batch["attention_mask"].astype(np.int64)
            for t, lg in self._logits(ids, mask).items():
                if t in out:
                    out[t][idx] = softmax(lg.astype(np.float64), axis=1)
        return {t: (self.labels[t], p) for t, p in out.items()}


def load_scorer(model_dir: Path, meta: dict, backend: str | None = None, device: str | None = None) -> CamembertScorer:
    """The scorer `pyfunc.VigieModel` serves: backend from meta["inference"] unless given."""
    return CamembertScorer(Path(model_dir), meta, backend=backend, device=device)
