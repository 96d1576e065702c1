"""Model families and the served model.

- `family.py`: what a family is (the `Family` protocol, `FitContext`, `FitResult`, the servable folder's meta);
- `families.py`: the table of families, imported lazily;
- one unit per family: `baseline_family.py` (+ `baseline.py`, its estimators) and `camembert_family.py`
  (+ `camembert.py` model and scorer, `camembert_trainer.py` Trainer set-up, `checkpoints.py`), `tiny.py`;
- `contract.py` (the served input/output columns and their checks) and `pyfunc.py` (the MLflow model class that
  applies the contract around any family's scorer).
"""
