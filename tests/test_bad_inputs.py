"""The bad-input suite: one table of cases across the stages. Each case must end in a counted skip with a reason
or a clear error naming the file, line or key — never a traceback, never half-written output.

To add a case: write a function `case_<name>(tmp_path)` that provokes the bad input and asserts the outcome, and
add it to CASES. Serving cases live in test_serving.py and load_test.py (they need a running server)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from training.config import load_config
from training.errors import ConfigError
from training.errors import InputError
from training.data.build import build_dataset
from training.data.readers import read_paths
from training.errors import InvalidInput
from training.models.contract import MAX_ROWS, prepare_frame

from tests.conftest import REPO

BASELINE = REPO / "configs" / "baseline.yaml"


def skips_for(path: Path) -> tuple[list, list]:
    skips: list = []
    arts = list(read_paths([path], skips.append))
    return arts, skips


def expect_skip(tmp_path: Path, name: str, data: bytes, reason: str) -> None:
    p = tmp_path / name
    p.write_bytes(data)
    arts, skips = skips_for(p)
    assert not arts and len(skips) == 1, (arts, skips)
    assert reason in skips[0].reason and str(p) in str(skips[0])


# --- files ---------------------------------------------------------------------------------------------------

def case_empty_file(t): expect_skip(t, "a.txt", b"", "empty file")
def case_whitespace_file(t): expect_skip(t, "a.txt", b" \n\t\n", "empty file")
def case_binary_file(t): expect_skip(t, "a.txt", os.urandom(4096) + b"\x00", "binary file")
def case_html_without_article(t): expect_skip(t, "a.html", b"<html><body><nav>Accueil | Contact</nav></body></html>", "no article text")
def case_html_garbage(t): expect_skip(t, "a.html", b"<<<>>><html<<", "no article text")
def case_unknown_extension(t): expect_skip(t, "a.pdf", b"%PDF-1.4", "unknown file type")
def case_title_without_body(t): expect_skip(t, "a.txt", "Juste un titre\n".encode(), "no article body")


def case_truncated_html(t):
    p = t / "a.html"
    p.write_bytes(b"<html><head><title>Titre</title></head><body><article><p>" + "Un début d'article coupé net ".encode() * 20)
    arts, skips = skips_for(p)
    assert len(arts) + len(skips) == 1


def case_cp1252_text(t):
    p = t / "a.txt"
    p.write_bytes("Élysée : l’été\nCorps œuvre « cité ».".encode("cp1252"))
    (a,), _ = skips_for(p)
    assert a.title == "Élysée : l'été" and "œuvre" in a.body


def case_latin1_text(t):
    p = t / "a.txt"
    p.write_bytes("Noël à Paris\nUn corps accentué : é à ç.".encode("latin-1"))
    (a,), _ = skips_for(p)
    assert a.title == "Noël à Paris"


def case_utf8_bom(t):
    p = t / "a.txt"
    p.write_bytes(b"\xef\xbb\xbf" + "Titre\nCorps.".encode())
    (a,), _ = skips_for(p)
    assert a.title == "Titre"


def case_fifty_megabyte_file(t):
    p = t / "big.txt"
    with open(p, "wb") as fh:
        fh.truncate(50 * 2**20)
    arts, skips = skips_for(p)
    assert not arts and "too large" in skips[0].reason


def case_jsonl_broken_line(t):
    p = t / "a.jsonl"
    p.write_text('{"id": 1, "title": "T", "text": "C"}\n{"id": 2, "title"\n')
    arts, skips = skips_for(p)
    assert [a.id for a in arts] == ["1"] and skips[0].line == 2 and "bad JSONL line" in skips[0].reason


def case_jsonl_wrong_types(t):
    p = t / "a.jsonl"
    p.write_text('{"id": {"x": 1}, "title": "T", "text": "C"}\n{"id": 3, "title": ["T"], "text": "C"}\n{"id": 4, "title": "T", "text": 7}\n')
    arts, skips = skips_for(p)
    assert not arts and [s.line for s in skips] == [1, 2, 3]


def case_truncated_gzip_shard(t):
    from tests.conftest import SHARDS

    p = t / "cut.jsonl.gz"
    p.write_bytes((SHARDS / "orangesum_topic_09.jsonl.gz").read_bytes()[:5000])
    arts, skips = skips_for(p)
    assert skips and "truncated" in skips[-1].reason


def case_directory_without_articles(t):
    (t / "d").mkdir()
    (t / "d" / "notes.csv").write_text("x")
    arts, skips = skips_for(t / "d")
    assert not arts and any(s.reason == "folder holds no article files" for s in skips)


def case_unreadable_file(t, monkeypatch=None):
    p = t / "a.txt"
    p.write_text("Titre\nCorps")
    orig = Path.read_bytes
    try:
        Path.read_bytes = lambda self: (_ for _ in ()).throw(PermissionError(13, "Permission denied")) if self == p else orig(self)
        arts, skips = skips_for(p)
    finally:
        Path.read_bytes = orig
    assert not arts and "permission denied" in skips[0].reason


def case_symlink_loop(t):
    d = t / "d"
    d.mkdir()
    (d / "a.txt").write_text("Titre\nCorps")
    (d / "self").symlink_to(d, target_is_directory=True)
    arts, skips = skips_for(d)
    assert len(arts) == 1 and any("symlink loop" in s.reason for s in skips)


def case_missing_input_path(t):
    with pytest.raises(InputError, match="no such file"):
        skips_for(t / "nope")


# --- labels ----------------------------------------------------------------------------------------------------

def _label_build(t, labels: dict, ann_rows: list[str] | None):
    src = t / "src"
    src.mkdir()
    for i in range(3):
        (src / f"art{i}.txt").write_text(f"Titre {i}\nCorps de l'article {i}.")
    (src / "labels.json").write_text(json.dumps(labels))
    ann = None
    if ann_rows is not None:
        ann = t / "ann.jsonl"
        ann.write_text("\n".join(ann_rows) + "\n")
    cfg = load_config(BASELINE, [f"data.output_dir={t / 'out'}", f"data.sources=[{{path: {src}}}]", "data.name=x",
                                 f"data.annotations={ann}" if ann else "data.annotations=null"])
    return build_dataset(cfg.data, progress=False)["skipped"]


def _ann(i, stance="neutre", **kw):
    return json.dumps({"id": i, "stance": stance, "confidence": 3, "annotator": "a", "stratum": "s", **kw})


def case_unknown_section(t):
    sk = _label_build(t, {"art0": {"topic": "monde"}, "art1": {"topic": "meteo"}, "art2": {"topic": "monde"}}, None)
    assert sk["unknown section"] == 1


def case_article_without_label(t):
    sk = _label_build(t, {"art0": {"topic": "monde"}}, None)
    assert sk["no section and no topic label"] == 2


def case_annotation_for_unknown_id(t):
    sk = _label_build(t, {f"art{i}": {"topic": "monde"} for i in range(3)}, [_ann("ghost")])
    assert sk["annotation for unknown id"] == 1


def case_conflicting_annotations(t):
    sk = _label_build(t, {f"art{i}": {"topic": "monde"} for i in range(3)},
                      [_ann("art0"), _ann("art0", "anti_occident", evidence=["Corps"])])
    assert sk["conflicting annotations for article art0"] == 1


def case_invalid_stance_value(t):
    sk = _label_build(t, {f"art{i}": {"topic": "monde"} for i in range(3)}, [_ann("art0", "pro-west")])
    assert sk["invalid annotation"] == 1


def case_duplicate_ids(t):
    src2 = t / "src2"
    src2.mkdir()
    (src2 / "art0.txt").write_text("Autre titre\nAutre corps.")
    src = t / "src"
    src.mkdir()
    (src / "art0.txt").write_text("Titre\nCorps.")
    (src / "labels.json").write_text(json.dumps({"art0": {"topic": "monde"}}))
    cfg = load_config(BASELINE, [f"data.output_dir={t / 'out'}", f"data.sources=[{{path: {src}}}, {{path: {src2}}}]",
                                 "data.annotations=null", "data.name=x"])
    assert build_dataset(cfg.data, progress=False)["skipped"]["duplicate id"] == 1


# --- configs ---------------------------------------------------------------------------------------------------

def case_config_unknown_key(t):
    p = t / "c.yaml"
    p.write_text(f"defaults: [{BASELINE}]\ndata:\n  nmae: x\n")
    with pytest.raises(ConfigError, match=r"c.yaml: data.nmae: unknown key"):
        load_config(p)


def case_config_wrong_type(t):
    with pytest.raises(ConfigError, match=r"model.topic.C"):
        load_config(BASELINE, ["model.topic.C=[1, 2]"])


def case_config_missing_file(t):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(t / "missing.yaml")


def case_override_of_missing_key(t):
    with pytest.raises(ConfigError, match="unknown key 'train.epochz'"):
        load_config(BASELINE, ["train.epochz=3"])


def case_empty_dataset_after_filters(t):
    src = t / "src"
    src.mkdir()
    (src / "a.txt").write_text("Titre\nCorps.")
    cfg = load_config(BASELINE, [f"data.output_dir={t / 'out'}", f"data.sources=[{{path: {src}}}]", "data.annotations=null", "data.name=x"])
    with pytest.raises(InputError, match="no article left"):
        build_dataset(cfg.data, progress=False)
    assert not (t / "out" / "x").exists()


# --- runtime -----------------------------------------------------------------------------------------------------

def case_tracking_server_unreachable(t):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
    p = subprocess.run([sys.executable, "-m", "training.cli", "train", "configs/baseline.yaml"], env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "not reachable" in p.stderr and "Traceback" not in p.stderr


def case_disk_full_on_output(t):
    src = t / "src"
    src.mkdir()
    (src / "a.txt").write_text("Titre\nCorps.")
    (src / "labels.json").write_text('{"a": {"topic": "monde"}}')
    cfg = load_config(BASELINE, [f"data.output_dir={t / 'out'}", f"data.sources=[{{path: {src}}}]", "data.annotations=null", "data.name=x"])
    import datasets

    orig = datasets.DatasetDict.save_to_disk
    datasets.DatasetDict.save_to_disk = lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left on device"))
    try:
        with pytest.raises(OSError, match="No space left"):
            build_dataset(cfg.data, progress=False)
    finally:
        datasets.DatasetDict.save_to_disk = orig
    assert not (t / "out" / "x").exists() and not list((t / "out").glob(".x.*"))


# --- the served model's own input checks (the same checks answer 400 over HTTP) ---------------------------------

def _invalid(df, match):
    with pytest.raises(InvalidInput, match=match):
        prepare_frame(df)


def case_predict_missing_text_column(t): _invalid(pd.DataFrame({"body": ["x"]}), "missing required column 'text'")
def case_predict_text_not_string(t): _invalid(pd.DataFrame({"text": [42]}), "must be a string")
def case_predict_empty_text(t): _invalid(pd.DataFrame({"text": ["   "]}), "is empty")
def case_predict_one_megabyte_text(t): _invalid(pd.DataFrame({"text": ["x" * 2**20]}), "more than")
def case_predict_too_many_articles(t): _invalid(pd.DataFrame({"text": ["Titre\ncorps"] * 10_000}), f"{MAX_ROWS}")
def case_predict_no_rows(t): _invalid(pd.DataFrame({"text": []}), "no rows")
def case_predict_date_not_iso(t): _invalid(pd.DataFrame({"text": ["Titre\ncorps"] * 2, "date": [None, "29/11/2026"]}), "row 1: 'date' must be an ISO date")

def case_predict_furniture_only(t):  # nothing of an article is left after cleaning: refused, not predicted
    _invalid(pd.DataFrame({"text": ["Titre\nLe gouvernement a parlé.", "ad\nLEAVE A REPLY\n- Advertisement -"]}),
             "row 1: no words of an article are left")


def case_predict_lone_surrogate(t):  # a JSON "\ud800" escape: the model reads it as U+FFFD, as the file readers do
    raw = "Moscou critique l'Occident\nLe Kremlin a d\u00e9nonc\u00e9 \ud800 les sanctions occidentales."
    df = pd.DataFrame({"text": pd.Series([raw], dtype=object), "title": pd.Series([None], dtype=object),
                       "source": pd.Series(["site\udfff.fr"], dtype=object)})
    texts, _ = prepare_frame(df)
    texts[0].encode("utf-8")  # what every later step (counts, pyarrow, JSON) does
    assert texts == prepare_frame(pd.DataFrame({"text": [raw.replace("\ud800", "\ufffd")]}))[0]


def test_furniture_above_the_headline_is_not_the_title():
    from training.data.cleaning import split_title
    from training.models.contract import article_words, format_output, prepare_text

    assert split_title("Publicité\nPartager\nLa réforme des retraites adoptée\nLe texte...")[0] == "La réforme des retraites adoptée"
    assert prepare_text("ad\nLEAVE A REPLY\n- Advertisement -") == ""
    texts = [prepare_text("Titre court\nUn corps de cinq mots."), prepare_text("Titre\n" + "mot " * 30)]
    assert [article_words(x) for x in texts] == [7, 31]
    out = format_output({}, texts, {})  # a model without heads still reports the words it read
    assert out["input_words"].tolist() == [7, 31]


CASES = {name[5:]: fn for name, fn in sorted(globals().items()) if name.startswith("case_")}


def test_the_suite_has_at_least_thirty_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name, tmp_path):
    CASES[name](tmp_path)
