"""The MLflow pyfunc that serves every model family under the contract of `contract.py`.

Artifacts: one folder (`model_dir`) with `meta.json` (family, label names per task, boilerplate lines) and
the family's files: `<task>.joblib` scikit-learn pipelines for baselines, a transformers folder for CamemBERT.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc

from training.data.cleaning import BoilerplateModel
from training.models.contract import InvalidInput, format_output, prepare_frame

META = "meta.json"


def write_meta(model_dir: Path, family: str, labels: dict[str, list[str]], heads: list[str], boilerplate: dict | None, extra: dict | None = None) -> None:
    meta = {"family": family, "labels": labels, "heads": heads, "boilerplate": boilerplate, **(extra or {})}
    (model_dir / META).write_text(json.dumps(meta, ensure_ascii=False, indent=2))


class VigieModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self._load(Path(context.artifacts["model_dir"]))

    def _load(self, model_dir: Path) -> None:
        self.meta = json.loads((model_dir / META).read_text())
        bp = self.meta.get("boilerplate")
        self.boilerplate = BoilerplateModel.from_json(bp) if bp else None
        family = self.meta["family"]
        if family == "baseline":
            import joblib

            self.scorers = {t: joblib.load(model_dir / f"{t}.joblib") for t in self.meta["heads"]}
        elif family == "camembert":
            from training.models.camembert import load_scorer

            self.scorer = load_scorer(model_dir, self.meta)
        else:
            raise ValueError(f"unknown model family {family!r}")

    def predict_texts(self, texts: list[str], dates: list[str | None] | None = None) -> dict:
        """Prepared texts (and publication dates, for the models that read them) -> {task: (labels, probabilities)}."""
        labels = self.meta["labels"]
        if self.meta["family"] == "baseline":
            from training.models.baseline import predict_proba_full

            return {t: (labels[t], predict_proba_full(p, texts, len(labels[t]), dates)) for t, p in self.scorers.items()}
        return self.scorer.predict_proba(texts)

    def predict(self, context, model_input, params=None):
        try:
            texts, dates = prepare_frame(model_input, self.boilerplate)
        except InvalidInput as e:
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

            raise MlflowException(str(e), error_code=INVALID_PARAMETER_VALUE) from None
        probas = self.predict_texts(texts, dates)
        return format_output(probas, len(texts), self.meta["labels"])
