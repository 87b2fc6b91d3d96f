# make study: run the whole study (dvc repro) · make test: the test suite · make ui: browse runs in MLflow
# make seeds: the three-seed comparison, into reports/three-seeds/
# Each target creates .venv and installs the project when missing (or when pyproject.toml changed).

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
# DVC runs each stage's `python -m stages ...` through the shell: put the venv first on PATH
export PATH := $(BIN):$(PATH)
export VIRTUAL_ENV := $(CURDIR)/$(VENV)

.PHONY: study seeds sweep test ui install clean-runs

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

study: $(STAMP)
	$(BIN)/dvc repro

# Three training seeds: a DVC experiment in a temporary copy of the committed study (seed 42's runs come back from
# DVC's run cache, seeds 43 and 44 are trained), logged to ./mlflow.db; its report is then copied out of the
# experiment's commit into reports/three-seeds/ (commit it). Takes about twice the time of `make study`.
SEEDS ?= [42,43,44]
SEEDS_EXP := three-seeds-$(shell git rev-parse --short HEAD 2>/dev/null)
seeds: $(STAMP)
	-$(BIN)/dvc exp remove -q $(SEEDS_EXP) 2>/dev/null  # a rerun replaces it (not --force: that reruns every stage)
	$(BIN)/dvc exp run --temp -n $(SEEDS_EXP) -S 'seeds=$(SEEDS)'
	rm -rf reports/three-seeds && mkdir -p reports/three-seeds
	git archive "$$(git show-ref | awk '$$2 ~ /^refs\/exps\/.*\/$(SEEDS_EXP)$$/ {print $$1}')" reports/README.md reports/figures \
		| tar -x -C reports/three-seeds --strip-components=1
	@echo "wrote reports/three-seeds/README.md (experiment $(SEEDS_EXP))"

# Equal tuning effort: the same learning-rate grid (lr_g = lr_d) for every GAN and ablation, one queued DVC
# experiment per model and value, run one at a time (2 cores), then summarised into metrics/lr_sweep.json (commit
# it; the report's "Tuning effort" section shows it). SWEEP_MODELS / LR_GRID narrow or widen it.
LR_GRID ?= 0.0002 0.001 0.005 0.02
SWEEP_MODELS ?= $(shell $(BIN)/python -c "import yaml; print(' '.join(yaml.safe_load(open('params.yaml'))['gans']))" 2>/dev/null)
sweep: $(STAMP)
	@for m in $(SWEEP_MODELS); do for lr in $(LR_GRID); do \
		$(BIN)/dvc exp remove -q lr-$$m-$$lr 2>/dev/null; \
		$(BIN)/dvc exp run --queue -n lr-$$m-$$lr -S gans.$$m.lr_g=$$lr -S gans.$$m.lr_d=$$lr || exit 1; \
	done; done
	$(BIN)/dvc queue start -j 1
	@while $(BIN)/dvc queue status | grep -qE 'Queued|Running'; do sleep 20; done
	$(BIN)/dvc queue status
	$(BIN)/python -m stages.sweep

test: $(STAMP)
	$(BIN)/python -m pytest

ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

clean-runs:  ## forget resume checkpoints (not results)
	rm -rf checkpoints
