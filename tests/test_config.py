"""Configs: typed validation, `defaults:` includes, dot overrides; every error names the key and the file."""

import pytest

from training.config import load_config
from training.errors import ConfigError

from tests.conftest import REPO

BASELINE = REPO / "configs" / "baseline.yaml"


def test_baseline_config_resolves_with_its_defaults():
    cfg = load_config(BASELINE)
    assert cfg.data.name == "orangesum" and cfg.model.family == "baseline"
    assert cfg.data.sources[0].path == "data/raw/orangesum/shards"  # from base.yaml
    assert len(cfg.data.topics) == 12


def test_overrides_in_dot_form():
    cfg = load_config(BASELINE, ["model.topic.C=2", "data.name=orangesum-small", "model.topic.word_ngram_range=[1,3]"])
    assert cfg.model.topic.C == 2.0 and cfg.data.name == "orangesum-small"
    assert cfg.model.topic.word_ngram_range == (1, 3)


def test_topic_map_merges_sections():
    cfg = load_config(BASELINE, ["data.topic_map={societe/people: societe, societe/media: societe}"])
    assert "societe" in cfg.data.topics and "societe/people" not in cfg.data.topics


@pytest.mark.parametrize("override, message", [
    ("model.topic.Cc=2", "unknown key 'model.topic.Cc'"),
    ("data.nmae=x", "unknown key 'data.nmae'"),
    ("model.topic.C=abc", "model.topic.C"),
    ("model.topic.C=-1", "model.topic.C"),
    ("model.topic.classifier=random_forest", "model.topic.classifier"),
    ("data.validation_fraction=0.9", "data.validation_fraction"),
    ("train.batch_size=0", "train.batch_size"),
    ("data.name=../escape", "data.name"),
    ("model.topic.class_bias_folds=1", "model.topic.class_bias_folds"),
    ("model.stance.class_bias_folds=-2", "model.stance.class_bias_folds"),
    ("novalue", "expected key.sub=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(BASELINE, [override])
    assert message in str(e.value)


def test_typo_in_a_config_file_names_file_and_key(tmp_path):
    (tmp_path / "base.yaml").write_text((REPO / "configs" / "base.yaml").read_text())
    bad = tmp_path / "typo.yaml"
    bad.write_text("defaults: [base.yaml]\nmodel:\n  family: baseline\n  topic:\n    classifer: logreg\n")
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    assert str(bad) in str(e.value) and "model.topic.classifer" in str(e.value) and "unknown key" in str(e.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:\d+: invalid YAML"):
        load_config(broken)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(listy)


def test_circular_defaults(tmp_path):
    (tmp_path / "a.yaml").write_text("defaults: [b.yaml]\n")
    (tmp_path / "b.yaml").write_text("defaults: [a.yaml]\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "a.yaml")


def test_cli_reports_config_errors_without_traceback_and_starts_nothing(tmp_path, monkeypatch):
    import subprocess
    import sys

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    p = subprocess.run([sys.executable, "-m", "training.cli", "train", "configs/baseline.yaml", "model.topic.Cc=2"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert p.returncode == 2 and "unknown key 'model.topic.Cc'" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "m.db").exists(), "no run may start on a bad config"
