"""A tiny CamemBERT (own Unigram tokenizer, random weights) for offline tests and smoke runs.

`vigie model tiny --out models/camembert-tiny` writes a folder that `AutoTokenizer.from_pretrained` and
`AutoModel.from_pretrained` load exactly like a copy of `almanach/camembert-base`: the training code takes it
through the same loading path and never knows the model is tiny. Its scores mean nothing (the weights are random);
it exists so that the whole CamemBERT pipeline — tokenisation, training, checkpoints, ONNX, serving — runs in
seconds on a laptop without a model hub.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

from training.errors import InputError

# CamemBERT's special tokens, at the ids a RoBERTa-style model expects (bos 0, pad 1, eos 2, unk 3).
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
MAX_POSITIONS = 514  # CamemBERT: 512 tokens + the padding offset of RoBERTa position ids


def iter_texts(corpus: list[str | Path], max_texts: int) -> Iterator[str]:
    """Up to max_texts article texts (title, lead, body) from files and folders, in reading order."""
    from training.data.readers import read_paths

    skipped = []
    n = 0
    for article in read_paths(corpus, skipped.append):
        text = article.text.strip()
        if not text:
            continue
        yield text
        n += 1
        if n >= max_texts:
            break
    if n == 0:
        raise InputError(f"{', '.join(map(str, corpus))}: no article text to train a tokenizer on"
                         + (f" ({len(skipped)} inputs skipped, first: {skipped[0]})" if skipped else ""))


def train_unigram(texts: Iterator[str], vocab_size: int) -> list[tuple[str, float]]:
    """A SentencePiece-style Unigram vocabulary [(piece, log-prob)], the special tokens first."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import Unigram
    from tokenizers.trainers import UnigramTrainer

    tok = Tokenizer(Unigram())
    # the same pre-tokenisation CamembertTokenizer applies (see transformers' tokenization_camembert.py)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
    ])
    trainer = UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, unk_token="<unk>",
                             max_piece_length=16, shrinking_factor=0.75, show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    import json

    vocab = [(str(p), float(s)) for p, s in json.loads(tok.to_str())["model"]["vocab"]]
    if [p for p, _ in vocab[: len(SPECIAL_TOKENS)]] != SPECIAL_TOKENS:
        raise RuntimeError(f"unexpected special token order in the trained vocabulary: {vocab[:5]}")
    return vocab


def _readable(folder: Path) -> None:
    """mkdtemp makes the folder private (0700) and safetensors its files 0600: give them the usual umask modes."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    for p in [folder, *folder.rglob("*")]:
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)


def build_tiny_camembert(out: Path, corpus: list[str], vocab_size: int = 8000, max_texts: int = 20000,
                         layers: int = 2, hidden: int = 128) -> Path:
    """Train a tokenizer on the corpus and save it with a randomly initialised small CamemBERT into `out`
    (replaced atomically: a reader sees the old folder or the new one)."""
    import torch
    from transformers import AutoTokenizer, CamembertConfig, CamembertModel, CamembertTokenizer

    from training.io import atomic_directory

    if vocab_size < 100:
        raise InputError(f"vocab_size {vocab_size}: too small (at least 100)")
    if hidden < 8 or layers < 1:
        raise InputError(f"hidden {hidden} / layers {layers}: need hidden >= 8 and layers >= 1")
    heads = 4 if hidden % 4 == 0 and hidden >= 128 else 2
    if hidden % heads:
        raise InputError(f"hidden {hidden} must be divisible by {heads} attention heads")

    out = Path(out)
    print(f"training a {vocab_size}-piece Unigram tokenizer on up to {max_texts} texts ...",
          file=sys.stderr, flush=True)
    vocab = train_unigram(iter_texts(list(corpus), max_texts), vocab_size)
    # additional_special_tokens=[]: the default ("<s>NOTUSED", ...) would add ids beyond the model's vocabulary
    tokenizer = CamembertTokenizer(vocab=vocab, additional_special_tokens=[], model_max_length=MAX_POSITIONS - 2)

    config = CamembertConfig(
        vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=4 * hidden, max_position_embeddings=MAX_POSITIONS, type_vocab_size=1,
        bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = CamembertModel(config, add_pooling_layer=False)  # the heads read the <s> state, no pooler
    with atomic_directory(out) as tmp:
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp)
        # what every consumer does: check the folder loads back before it replaces the old one
        reloaded = AutoTokenizer.from_pretrained(tmp)
        sample = "L'Iran et la Russie renforcent leur partenariat."
        if reloaded(sample)["input_ids"] != tokenizer(sample)["input_ids"]:
            raise RuntimeError("the saved tokenizer does not reproduce the trained one")
        _readable(tmp)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"tiny CamemBERT: {layers} layers, hidden {hidden}, {heads} heads, vocab {len(vocab)}, "
          f"{n_params / 1e6:.1f} M parameters", file=sys.stderr)
    return out
