# Two entry points (see README): `make run` (the main job) and `make test` (the test suite).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# one pytest worker per core (at most 4: each builds the session fixtures); a test file stays on one worker, so
# its module fixtures are built once. `make test PYTEST_WORKERS=` runs the suite in one process.
PYTEST_WORKERS ?= -n auto --maxprocesses=4 --dist loadfile

.PHONY: setup run test data train register predict clean

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (pyproject pins Python 3.11 for torch==2.13.0)"; exit 1; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

data/raw/orangesum:
	$(VENV)/bin/vigie data fetch orangesum --from ../shared/data/orangesum

# The main job: build the dataset, train the baseline, register the best run, predict the seed article.
run: setup data/raw/orangesum
	$(VENV)/bin/vigie data build configs/baseline.yaml
	$(VENV)/bin/vigie train configs/baseline.yaml
	$(VENV)/bin/vigie register
	$(VENV)/bin/vigie predict seeds/

test: setup data/raw/orangesum
	$(PY) -m pytest -q $(PYTEST_WORKERS) $(PYTEST_ARGS)

clean:
	rm -rf data/processed mlruns models
