"""The data build: ClassLabels, leakage-free splits, counted skips, atomic output, labels from annotations."""

import json
import signal
from pathlib import Path

import pytest
from datasets import load_from_disk
from hypothesis import given, settings
from hypothesis import strategies as st

from training.config import load_config
from training.errors import InputError
from training.data.build import build_dataset
from training.data.cleaning import BoilerplateModel, model_text, normalize_for_dedup, normalize_many
from training.data.dedup import find_duplicates

from tests.conftest import REPO, SHARDS


def test_saved_dataset_has_classlabels_and_the_seed(small_build):
    cfg, stats, tmp = small_build
    dsd = load_from_disk(stats["output"])
    assert set(dsd) == {"train", "validation", "test"}
    for split in dsd.values():
        assert split.features["topic"].names == cfg.data.topics
        assert split.features["stance"].names == ["anti_occident", "neutre", "pro_occident"]
    rows = {r["id"]: r for s in dsd.values() for r in s}
    seed = rows["000_e3005b3932ea3b15"]
    assert dsd["train"].features["topic"].int2str(seed["topic"]) == "monde"
    assert seed["stance"] == 0 and seed["title"].startswith("L'Iran et la Russie")
    assert seed["body"].startswith("Moscou et Téhéran")
    missing = [r for r in rows.values() if r["stance"] == -1]
    assert missing, "most articles carry no stance label, explicitly -1"
    assert stats["splits"]["train"]["stance_labelled"] > 0


def test_splits_are_leakage_free(small_build):
    _, stats, _ = small_build
    dsd = load_from_disk(stats["output"])
    seen: dict[str, str] = {}
    for name, split in dsd.items():
        for key in normalize_many(split["body"]):
            assert seen.setdefault(key, name) == name, "a normalised body appears in two splits"
        origins = set(split["origin_split"])
        if name == "test":
            assert origins <= {"test", "valid"}
        else:
            assert not origins & {"test", "valid"}
    groups: dict[str, str] = {}
    for name, split in dsd.items():
        for g in split["group"]:
            assert groups.setdefault(g, name) == name, "a duplicate group straddles two splits"


def test_full_build_invariants_on_real_data(tmp_path_factory):
    """Issue 2's acceptance on the whole corpus: built here (about 30 s), never from a cached folder."""
    cfg = load_config(REPO / "configs" / "baseline.yaml", [f"data.output_dir={tmp_path_factory.mktemp('full')}"])
    stats = build_dataset(cfg.data, progress=False)
    dsd = load_from_disk(stats["output"])
    assert dsd["train"].features["topic"].names == cfg.data.topics
    assert set(dsd["test"]["origin_split"]) <= {"test", "valid"}
    assert not set(dsd["train"]["origin_split"]) & {"test", "valid"}
    assert not set(dsd["validation"]["origin_split"]) & {"test", "valid"}
    assert 2700 <= len(dsd["test"]) <= 3000
    keys = [set(normalize_many(dsd[s]["body"])) for s in ("train", "validation", "test")]
    assert not keys[0] & keys[1] and not keys[0] & keys[2] and not keys[1] & keys[2]
    ids = [set(dsd[s]["id"]) for s in ("train", "validation", "test")]
    assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2]
    assert stats["splits"]["train"]["stance_labelled"] > 1500


def test_text_column_is_the_served_model_text(tmp_path):
    """`text` is `model_text` of the row's parts with the build's boilerplate: a lead line that recurs in the
    source's bodies is out of `text`, as it is out of a text the served model cleans."""
    src = tmp_path / "src"
    src.mkdir()
    furniture = "Suivez Vigie sur les réseaux sociaux"
    recs = [{"id": f"a{i}", "label": "monde", "title": f"Titre numéro {i} w{i}x w{i}y w{i}z",
             "abstract": f"Le chapeau {i}.\n{furniture}",
             "text": " ".join(f"mot{i}_{k}" for k in range(60)) + f".\n{furniture}"} for i in range(8)]
    (src / "a.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))
    cfg = load_config(REPO / "configs" / "baseline.yaml", [f"data.output_dir={tmp_path / 'out'}", "data.name=t",
                                                         f"data.sources=[{{path: {src}, name: local}}]",
                                                         "data.annotations=null"])
    stats = build_dataset(cfg.data, progress=False)
    assert stats["boilerplate_lines"] == {"local": 1}
    boiler = BoilerplateModel.from_json(json.loads((Path(stats["output"]) / "boilerplate.json").read_text()))
    rows = [r for split in load_from_disk(stats["output"]).values() for r in split]
    assert len(rows) == 8
    for r in rows:
        assert r["text"] == model_text(r["title"], r["body"], lead=r["abstract"], source="local", boilerplate=boiler)
        assert furniture not in r["text"] and furniture not in r["body"]
        assert r["text"].startswith(r["title"] + "\nLe chapeau")


def test_stats_report_counts_skips_and_fingerprint(small_build):
    _, stats, _ = small_build
    on_disk = json.loads((Path(stats["output"]) / "stats.json").read_text())
    assert on_disk["fingerprint"] == stats["fingerprint"] and len(stats["fingerprint"]) == 64
    assert {"rows", "topic", "stance", "stance_labelled"} <= set(on_disk["splits"]["train"])
    assert on_disk["skipped"].get("bad JSONL line", 0) >= 1  # the real shards hold lines with an empty text
    assert "removed" in on_disk["dedup"] and "groups" in on_disk["label_conflicts"]


def test_unsplit_repeats_are_grouped_with_train():
    """unsplit is mostly repeats of train articles: dedup must see them (same body or same title)."""
    import gzip

    recs = []
    with gzip.open(SHARDS / "orangesum_topic_00.jsonl.gz", "rt") as fh:
        recs = [json.loads(line) for line in fh]
    recs = [r for r in recs if r.get("text")]
    r = find_duplicates([x["text"] for x in recs], [x["title"] for x in recs])
    grouped_unsplit = sum(1 for i, x in enumerate(recs) if x["split"] == "unsplit" and r.group.count(r.group[i]) > 1)
    n_unsplit = sum(1 for x in recs if x["split"] == "unsplit")
    assert n_unsplit and grouped_unsplit / n_unsplit > 0.5


def test_near_duplicates_are_grouped():
    base = " ".join(f"mot{i}" for i in range(300))
    near = base.replace("mot150", "autre")
    other = " ".join(f"terme{i}" for i in range(300))
    r = find_duplicates([base, near, other], ["a b c d", "e f g h", "i j k l"])
    assert r.group[0] == r.group[1] != r.group[2]
    assert r.near_pairs == 1 and r.exact_of == [0, 1, 2]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(["alpha beta gamma delta epsilon", "zeta eta theta iota kappa", "Alpha, beta! gamma delta epsilon"]), min_size=1, max_size=12))
def test_exact_copies_always_share_a_group(bodies):
    r = find_duplicates(bodies, [f"t{i}" for i in range(len(bodies))])
    keys = [normalize_for_dedup(b) for b in bodies]
    for i in range(len(bodies)):
        for j in range(len(bodies)):
            if keys[i] == keys[j]:
                assert r.group[i] == r.group[j]


# --- bad inputs to the build -------------------------------------------------------------------------------


def write_articles(folder: Path, n: int = 3) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"art{i}.txt").write_text(f"Titre numéro {i}\nCorps de l'article {i}, assez long pour compter. " * 3)


def tiny_cfg(tmp_path, labels: dict, annotations: str | None = None, extra=()):
    src = tmp_path / "src"
    write_articles(src)
    (src / "labels.json").write_text(json.dumps(labels))
    ov = [f"data.output_dir={tmp_path / 'out'}", f"data.sources=[{{path: {src}, name: local}}]", "data.name=t"]
    ov.append(f"data.annotations={annotations}" if annotations else "data.annotations=null")
    return load_config(REPO / "configs" / "baseline.yaml", ov + list(extra))


def test_label_problems_are_counted_skips(tmp_path):
    ann = tmp_path / "ann.jsonl"
    rows = [
        {"id": "art0", "stance": "neutre", "confidence": 3, "annotator": "a", "stratum": "s"},
        {"id": "art1", "stance": "anti_occident", "confidence": 3, "annotator": "a", "stratum": "s", "evidence": ["Corps"]},
        {"id": "art1", "stance": "neutre", "confidence": 2, "annotator": "b", "stratum": "s"},
        {"id": "ghost", "stance": "neutre", "confidence": 3, "annotator": "a", "stratum": "s"},
        {"id": "art2", "stance": "pro_west", "confidence": 3, "annotator": "a", "stratum": "s"},
    ]
    ann.write_text("\n".join(json.dumps(r) for r in rows) + "\n{oops\n")
    labels = {"art0": {"topic": "monde"}, "art1": {"topic": "france"}, "art2": {"topic": "sport-extreme"}}
    stats = build_dataset(tiny_cfg(tmp_path, labels, str(ann)).data, progress=False)
    sk = stats["skipped"]
    assert sk["conflicting annotations for article art1"] == 1
    assert sk["annotation for unknown id"] >= 1  # ghost (and art2, whose topic is unknown)
    assert sk["unknown section"] == 1
    assert sk["invalid annotation"] == 1 and sk["invalid JSON"] == 1
    dsd = load_from_disk(stats["output"])
    rows = {r["id"]: r for s in dsd.values() for r in s}
    assert rows["art0"]["stance"] == 1 and rows["art1"]["stance"] == -1  # conflicted: no label, not neutre
    assert "art2" not in rows


def test_duplicate_ids_are_counted(tmp_path):
    cfg = tiny_cfg(tmp_path, {f"art{i}": {"topic": "monde"} for i in range(3)})
    other = tmp_path / "src2"
    write_articles(other, 2)
    cfg.data.sources.append(cfg.data.sources[0].model_copy(update={"path": str(other)}))
    stats = build_dataset(cfg.data, progress=False)
    assert stats["skipped"]["duplicate id"] == 2


def test_empty_dataset_after_filters_is_an_error(tmp_path):
    cfg = tiny_cfg(tmp_path, {}, extra=["data.sections=[monde]"])
    with pytest.raises(InputError, match="no article left"):
        build_dataset(cfg.data, progress=False)
    assert not (tmp_path / "out" / "t").exists()


def test_missing_annotation_file_is_an_error(tmp_path):
    cfg = tiny_cfg(tmp_path, {"art0": {"topic": "monde"}}, annotations=str(tmp_path / "nope.jsonl"))
    with pytest.raises(InputError, match="data.annotations"):
        build_dataset(cfg.data, progress=False)


def test_interrupted_build_leaves_previous_output_intact(tmp_path, monkeypatch):
    labels = {f"art{i}": {"topic": "monde"} for i in range(3)}
    cfg = tiny_cfg(tmp_path, labels)
    first = build_dataset(cfg.data, progress=False)
    before = sorted(p.name for p in Path(first["output"]).iterdir())

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("datasets.DatasetDict.save_to_disk", interrupt)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(cfg.data, progress=False)
    assert sorted(p.name for p in Path(first["output"]).iterdir()) == before
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")], "temporary folder left behind"


def test_disk_full_leaves_no_half_written_dataset(tmp_path, monkeypatch):
    cfg = tiny_cfg(tmp_path, {f"art{i}": {"topic": "monde"} for i in range(3)})

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("training.io.atomic_write_text", full)
    monkeypatch.setattr("training.data.build.atomic_write_text", full)
    with pytest.raises(OSError):
        build_dataset(cfg.data, progress=False)
    out = tmp_path / "out"
    assert not out.exists() or not any(out.iterdir())


def test_sigint_during_build_from_the_cli(tmp_path):
    """A real SIGINT to `vigie data build`: exit code 130, message, and no output folder."""
    import subprocess
    import sys
    import time

    cfg_overrides = [f"data.output_dir={tmp_path / 'out'}", "data.name=sigint"]
    p = subprocess.Popen([sys.executable, "-m", "training.cli", "data", "build", "configs/baseline.yaml", *cfg_overrides, "--quiet"],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "sigint").exists()
