# Every target honours MLFLOW_TRACKING_URI (default: paths.tracking_uri in conf/paths/default.yaml).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 5000
STAMP := $(VENV)/.installed
# test processes: one per core, files kept whole on one worker (their module fixtures are built once)
TEST_WORKERS ?= 2
# where `make weights` copies the original MesoNet .h5 files from (a download is tried when absent)
WEIGHTS_SRC ?= ../shared/mesonet/weights
WEIGHTS_DIR ?= $(or $(DEEPFAKE_WEIGHTS_DIR),$(HOME)/.cache/deepfake-detection/weights)

.PHONY: help install test test-all lint format docs docs-serve cross-dataset selection weights demo report audit bench ui clean clean-cache

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install --progress-bar on -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project with its test tools

test: install  ## run the test suite (slow end-to-end tests excluded; exit code 5 = no tests = failure)
	@$(PY) -m pytest -m "not slow" -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

test-all: install  ## run every test, the slow end-to-end ones included
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; [ $$rc -ne 5 ] || exit 1; exit $$rc

LINT_PATHS := src tests benchmarks conf docs *.py README.md Makefile

lint: install  ## ruff check, ruff format --check and codespell (the same checks as .pre-commit-config.yaml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/codespell $(LINT_PATHS)

docs: install  ## build the documentation site into site/ (strict: a broken link or missing page fails)
	$(VENV)/bin/mkdocs build --strict

docs-serve: install  ## serve the documentation site on 127.0.0.1:8000, rebuilt on every edit
	$(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8000

format: install  ## apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

weights:  ## copy the original MesoNet .h5 files into the weights cache (make weights WEIGHTS_SRC=<folder>)
	@mkdir -p "$(WEIGHTS_DIR)"
	@if [ -d "$(WEIGHTS_SRC)" ]; then cp -n "$(WEIGHTS_SRC)"/*.h5 "$(WEIGHTS_DIR)"/ && echo "MesoNet weights in $(WEIGHTS_DIR)"; \
	else echo "$(WEIGHTS_SRC) not found: give the folder holding the .h5 files (make weights WEIGHTS_SRC=<folder>); without it weights=pretrained downloads them into $(WEIGHTS_DIR)"; fi

demo: install weights  ## the whole study on the embedded dataset: train, evaluate the grid, report
	$(PY) -m src.experiments.studies.demo

cross-dataset: install  ## the cross-dataset protocol end to end on embedded stand-ins: train on FF++, test on 6 sets, table
	$(PY) -m src.experiments.studies.cross_dataset $(ARGS)

selection: install  ## how much picking the epoch on the test set inflates a test AUC (RUN=<train run id>)
	$(PY) -m src.experiments.studies.selection_inflation --run $(RUN) $(ARGS)

report: install  ## the tables of the latest evaluate sweep (SWEEP=<id> for another; PRESET=cross_dataset; ARGS=...)
	$(PY) -m src.experiments.report --preset $(or $(PRESET),study) $(if $(SWEEP),--sweep-id $(SWEEP),) $(ARGS)

audit: install  ## shortcut audit of a dataset's cheap features (ARGS="data=celebdf data.root=..." for another)
	$(PY) -m src.experiments.studies.audit $(ARGS)

bench: install  ## benchmarks (QUICK=1 for a few minutes)
	$(PY) -m benchmarks.run $(if $(QUICK),--quick,)

ui: install  ## the MLflow UI on 127.0.0.1, port PORT (default 5000)
	PYTHONWARNINGS=ignore::DeprecationWarning $(VENV)/bin/mlflow ui --backend-store-uri "$$($(PY) -c 'from src.experiments.tracking import default_tracking_uri as u; print(u())')" --host 127.0.0.1 --port $(PORT) --workers 1

clean-cache:  ## remove the generated dataset and face-crop caches
	rm -rf data/synthetic-celebdf* data/face-cache

clean:  ## remove outputs, checkpoints, caches and the virtual environment
	rm -rf $(VENV) outputs multirun checkpoints logs data site .pytest_cache .ruff_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
