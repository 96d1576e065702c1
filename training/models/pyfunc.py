"""The MLflow pyfunc that serves every model family under the contract of `contract.py`.

Artifacts: one folder (`model_dir`) written by the family's `fit`: `meta.json` (family, label names per task,
trained heads, boilerplate lines; see `family.write_meta`) and the family's own files. The family named in
`meta.json` loads its scorer (`families.get(name).load`); this class only applies the contract around it.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import pandas as pd

from training.data.cleaning import BoilerplateModel
from training.errors import InvalidInput
from training.models import families
from training.models.contract import format_output, prepare_frame
from training.models.family import read_meta


class VigieModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self._load(Path(context.artifacts["model_dir"]))

    def _load(self, model_dir: Path) -> None:
        self.meta = read_meta(model_dir)
        bp = self.meta.get("boilerplate")
        self.boilerplate = BoilerplateModel.from_json(bp) if bp else None
        self.dated_sources = frozenset(self.meta.get("dated_sources") or ())
        self.scorer = families.get(self.meta["family"]).load(model_dir, self.meta)

    def predict_texts(self, texts: list[str], dates: list[str | None] | None = None) -> dict:
        """Prepared texts (and publication dates, for the models that read them) -> {task: (labels, probabilities)}."""
        return self.scorer.predict_proba(texts, dates)

    # a DataFrame hint: MLflow skips type-hint schema inference (the logged signature is the contract's own)
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        try:
            texts, dates = prepare_frame(model_input, self.boilerplate, self.dated_sources)
        except InvalidInput as e:
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

            raise MlflowException(str(e), error_code=INVALID_PARAMETER_VALUE) from None
        probas = self.predict_texts(texts, dates)
        explain = getattr(self.scorer, "evidence", None)  # optional: the sentences behind a stance decision
        return format_output(probas, texts, self.meta["labels"], explain(texts, probas) if explain else None)
