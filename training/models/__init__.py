"""Model families. Each exposes `fit_and_predict(...) -> FitResult` for `training/train.py`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass
class FitResult:
    tasks: list[str]  # tasks that got a trained head
    proba: dict[str, dict[str, np.ndarray]]  # task -> split -> [n, n_labels] probabilities on the labelled rows
    pip_requirements: list[str]
    top_features: dict[str, pd.DataFrame | None] = field(default_factory=dict)
    extra_metrics: dict[str, float] = field(default_factory=dict)
