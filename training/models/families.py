"""The table of model families: name -> the module that holds its `FAMILY` (see `family.py`).

Modules are imported on first use, so a baseline run never imports torch. Adding a family: one module with its
config class and `FAMILY`, and one line here.
"""

from __future__ import annotations

import importlib

from training.errors import ConfigError
from training.models.family import Family, ModelConfig

# name -> "module" (its FAMILY) or "module:ATTRIBUTE"
FAMILIES: dict[str, str] = {
    "baseline": "training.models.baseline_family",
    "camembert": "training.models.camembert_family",
}
DEFAULT = "baseline"  # the family of a config whose `model:` section names none


def names() -> list[str]:
    return list(FAMILIES)


def get(name: str) -> Family:
    if name not in FAMILIES:
        raise ConfigError(f"model.family: unknown family {name!r}; known: {', '.join(FAMILIES)}")
    module, _, attribute = FAMILIES[name].partition(":")
    return getattr(importlib.import_module(module), attribute or "FAMILY")


def config_class(name: str) -> type[ModelConfig]:
    return get(name).config_class
