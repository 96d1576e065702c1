"""Typed, validated configuration: YAML files (with `defaults:` includes) plus `key.sub=value` overrides.

Every error names the file and the key before any work starts. The resolved config (`Config.model_dump()`) is
what gets logged with a run. The `model:` section belongs to the family it names: it is validated by that
family's config class, looked up in the family table (`models/families.py`), so this module names no family.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from training.data.schema import ORANGESUM_SECTIONS, Strict, off_or_folds
from training.errors import ConfigError
from training.models import families
from training.models.family import ModelConfig

# --- data ------------------------------------------------------------------------------------------------


class SourceConfig(Strict):
    path: str
    name: str | None = None  # source tag (boilerplate is learned per source); default: the folder name


class NearDupConfig(Strict):
    threshold: float = Field(0.8, gt=0, le=1)
    num_perm: int = Field(64, ge=16, le=512)
    shingle_size: int = Field(5, ge=1, le=20)
    min_title_words: int = Field(4, ge=1)


class BoilerplateConfig(Strict):
    min_docs: int = Field(5, ge=2)
    min_fraction: float = Field(0.02, gt=0, le=1)


class DataConfig(Strict):
    name: str = Field("orangesum", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    sources: list[SourceConfig] = Field(min_length=1)
    annotations: str | None = "data/annotations/stance/adjudicated.jsonl"
    sections: list[str] = Field(default_factory=lambda: list(ORANGESUM_SECTIONS), min_length=1)
    topic_map: dict[str, str] = Field(default_factory=dict)  # section -> topic; unmapped sections keep their name
    # duplicate groups whose members carry different topics: `drop` them all, keep the `majority` topic (a tie
    # drops the group), or `majority_first` (a tie keeps the topic of the group's first article in corpus order)
    conflict_policy: Literal["majority", "majority_first", "drop"] = "majority"
    validation_fraction: float = Field(0.1, gt=0, lt=0.5)
    seed: int = 13
    max_articles: int | None = Field(None, ge=10)  # a deterministic slice, for small runs and tests
    output_dir: str = "data/processed"
    near_dup: NearDupConfig = NearDupConfig()
    boilerplate: BoilerplateConfig = BoilerplateConfig()

    @property
    def topics(self) -> list[str]:
        """The topic label names, in a stable order."""
        return sorted({self.topic_map.get(s, s) for s in self.sections})

    @model_validator(mode="after")
    def _map_known_sections(self):
        unknown = sorted(set(self.topic_map) - set(self.sections))
        if unknown:
            raise ValueError(f"topic_map names sections that are not in data.sections: {unknown}")
        return self


class TrainConfig(Strict):
    seed: int = 42
    epochs: float = Field(3.0, gt=0)
    learning_rate: float = Field(3e-5, gt=0)
    lr_scheduler: Literal["linear", "cosine", "constant_with_warmup"] = "linear"
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    batch_size: int = Field(16, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    gradient_accumulation: int = Field(1, ge=1)
    bf16: Literal["auto", True, False] = "auto"
    early_stopping_patience: int | None = Field(2, ge=1)
    eval_steps: int | None = Field(None, ge=1)  # None: evaluate (and checkpoint) every epoch
    save_total_limit: int = Field(2, ge=1)
    max_train_rows: int | None = Field(None, ge=10)
    max_eval_rows: int | None = Field(None, ge=10)
    output_dir: str = "models/checkpoints"
    resume: bool = False
    num_threads: int | None = Field(None, ge=1)  # CamemBERT: torch threads; baselines: fitting processes. None: all cores


class EvaluateConfig(Strict):
    splits: list[Literal["validation", "test"]] = ["validation", "test"]
    worst_examples: int = Field(25, ge=0)
    top_features: int = Field(20, ge=0)
    calibration_bins: int = Field(10, ge=2)
    # > 0: also evaluate out-of-fold predictions over the train labels of `oof_tasks` (figures named `oof_*`):
    # a rare class has a handful of validation rows, its train labels are many times more. The family refits its
    # whole model per fold (decision rule included: nested), so this costs `oof_folds` fits
    oof_folds: int = Field(0, ge=0, le=20)
    oof_tasks: list[Literal["topic", "stance"]] = ["stance"]

    _oof_folds = field_validator("oof_folds")(off_or_folds)


class SweepParam(Strict):
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    type: Literal["float", "int", "categorical"] = "float"
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _complete(self):
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs choices")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError("a numeric parameter needs low <= high")
        return self


class SweepConfig(Strict):
    space: dict[str, SweepParam] = Field(default_factory=dict)  # dotted config key -> distribution
    metric: str = "validation_macro_f1_mean"
    direction: Literal["maximize", "minimize"] = "maximize"
    study_name: str | None = None
    sampler_seed: int = 0
    pruner: Literal["median", "none"] = "median"


class Config(Strict):
    experiment: str = "vigie"
    run_name: str | None = None
    description: str = ""
    data: DataConfig
    model: SerializeAsAny[ModelConfig] = Field(default_factory=lambda: families.config_class(families.DEFAULT)())
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    sweep: SweepConfig = SweepConfig()
    config_path: str | None = None  # set by load_config

    @field_validator("model", mode="wrap")
    @classmethod
    def _family_config(cls, v, handler):
        """The `model:` section, validated by the config class of the family it names (families.py)."""
        if isinstance(v, ModelConfig):
            return v
        if not isinstance(v, dict):
            raise ValueError("must be a mapping with a `family` key")
        name = v.get("family", families.DEFAULT)
        if name not in families.names():
            raise ValueError(f"unknown model family {name!r}; known: {', '.join(families.names())}")
        return families.config_class(name).model_validate(v)


# --- loading ---------------------------------------------------------------------------------------------


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config: {e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys, got {type(data).__name__}")
    return data


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _load_with_defaults(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular `defaults:` include")
    data = _read_yaml(path)
    includes = data.pop("defaults", []) or []
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list):
        raise ConfigError(f"{path}: `defaults` must be a file name or a list of file names")
    merged: dict = {}
    for inc in includes:
        merged = _merge(merged, _load_with_defaults(path.parent / str(inc), seen + (path,)))
    return _merge(merged, data)


def _model_for(model_cls: type[BaseModel] | None, key: str, current: Any) -> type[BaseModel] | None:
    """The pydantic model of a nested field, or None for free-form fields (dicts)."""
    if model_cls is None:
        return None
    if model_cls is Config and key == "model":
        name = (current or {}).get("family", families.DEFAULT) if isinstance(current, dict) else families.DEFAULT
        return families.config_class(name) if name in families.names() else None
    field = model_cls.model_fields[key]
    ann = field.annotation
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def apply_override(data: dict, override: str, source: str) -> None:
    if "=" not in override:
        raise ConfigError(f"override '{override}': expected key.sub=value")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node, model_cls = data, Config
    for i, part in enumerate(parts):
        path = ".".join(parts[: i + 1])
        if model_cls is not None and part not in model_cls.model_fields:
            raise ConfigError(f"override '{override}': unknown key '{path}' (not in {source} or the config schema)")
        if i == len(parts) - 1:
            node[part] = value
            return
        sub_cls = _model_for(model_cls, part, node.get(part))
        if not isinstance(node.get(part), dict):
            if node.get(part) is not None and sub_cls is None:
                raise ConfigError(f"override '{override}': '{path}' is not a mapping")
            node[part] = {}
        node, model_cls = node[part], sub_cls


def format_validation_error(e: ValidationError, source: str) -> str:
    lines = []
    for err in e.errors():
        parts = [str(x) for x in err["loc"] if not str(x).startswith("function-")]
        loc = ".".join(parts)
        msg = "unknown key (typo?)" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {loc or '(top level)'}: {msg}")
    return "\n".join(lines)


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    path = Path(path)
    data = _load_with_defaults(path)
    for ov in overrides or []:
        apply_override(data, ov, str(path))
    data["config_path"] = str(path)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, str(path))) from None


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
