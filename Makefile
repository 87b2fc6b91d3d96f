# make smoke: a tiny study in a temporary copy · make study: the whole study (dvc repro) · make test: the tests
# make ui: browse runs in MLflow
# make server: a shared MLflow tracking server (stages log to it with MLFLOW_TRACKING_URI=http://host:port)
# make sweep: the tuning protocol (queued DVC experiments) · make compare: experiments side by side
# Each target creates .venv and installs the project when missing (or when pyproject.toml changed).

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
# DVC runs each stage's `python -m stages ...` through the shell: put the venv first on PATH
export PATH := $(BIN):$(PATH)
export VIRTUAL_ENV := $(CURDIR)/$(VENV)

.PHONY: smoke study sweep compare bench bench-loop gpu-check test ui server install clean-runs

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

# The whole pipeline on a tiny profile (one model of each family, a few hundred images) in a temporary copy: does it
# work here? A few minutes; prints the smoke report's path.
smoke: $(STAMP)
	$(BIN)/python -m stages.smoke

# STUDY_RUN tags every MLflow run of this `dvc repro` (`study.run`): filter on it to see one study's runs together.
# stages/study.py plans the stages DVC will run, runs them `jobs` at a time (params.yaml; STUDY_JOBS=N overrides),
# each as its own `dvc --wait-for-lock repro -s STAGE`, and prints each stage's place and the study's time left as
# it starts.
study: $(STAMP)
	STUDY_RUN=study-$$(date -u +%Y%m%dT%H%M%SZ) $(BIN)/python -m stages.study

# Equal tuning effort: the same protocol for every generator (every GAN and ablation with lr_g = lr_d, ddpm and the
# VAE with lr), carried through by `python -m stages.sweep run` (pipeline/tuning.py has the rules): the learning-rate
# grid (LR_GRID) at a selection seed no reported number uses (the first of pipeline/tuning.py's SELECTION_SEEDS), a
# value one step beyond an end where the best is there (and again while it wins), close calls rerun at the second
# selection seed, then batch sizes 16, 32 and 64 at the best learning rate (and, where another batch size wins, it is
# set and the learning rate's neighbours run at it), judged on validation FID; at the end each model's best values are
# written into params.yaml. Each cell is one queued DVC experiment running only that model's training and evaluation,
# SWEEP_JOBS at once (each at cores / SWEEP_JOBS threads: two one-thread cells get more through two cores than one
# two-thread cell); the cells are summarised into metrics/lr_sweep.json as each finishes (commit it with params.yaml:
# the experiments stay on the machine that ran them; the report's Tuning effort shows it). A rerun plans from what is
# done: after an interruption, or with a wider LR_GRID, only the missing cells run. SWEEP_MODELS (default: every
# generator) narrows it; SWEEP_UNTIL=lr stops before the batch-size stage; SWEEP_ROUNDS=N after N rounds of cells.
LR_GRID ?= 0.001 0.003 0.01
SWEEP_MODELS ?=
SWEEP_JOBS ?= 2
SWEEP_UNTIL ?= batch
SWEEP_ROUNDS ?=
sweep: $(STAMP)
	$(BIN)/python -m stages.sweep run $(SWEEP_MODELS) --grid '$(LR_GRID)' --jobs $(SWEEP_JOBS) --until $(SWEEP_UNTIL) \
		$(if $(SWEEP_ROUNDS),--rounds $(SWEEP_ROUNDS))

# Experiments side by side, readable: the headline metrics (reports/headline.json: `<model>.fid`, `.recall`,
# `.test_mse`, `.probe_accuracy`, each with `_std`) and the params, only the columns whose values differ between the
# rows (workspace, the commit, its experiments); then how the headline moved from HEAD to the workspace (or between
# REVS="a b", commits or experiment names). EXPS="-A": the experiments of every commit; FORMAT="--md": to paste.
NOT_HEADLINE := (?!Experiment$$|\w+\.(fid|recall|test_mse|probe_accuracy)(_std)?$$|seeds?$$|device$$|(data|budget|train|evaluator|evaluate|tracking|autoencoders|gans|diffusion)\.)
compare: $(STAMP)
	$(BIN)/dvc exp show --no-pager --only-changed --drop '$(NOT_HEADLINE)' $(EXPS) $(FORMAT)
	$(BIN)/dvc metrics diff --targets reports/headline.json $(FORMAT) -- $(REVS)

# A model's optimizer steps against the machine: images/s, FLOPs per training image, GFLOP/s and the share of the FP32
# peak this process reaches (BENCH_MODELS, two threads as the study's stages). BENCH_ARGS="--against REV --repeats 5":
# paired runs against the code of a git revision, alternated, with the median ratio. A benchmark: say which machine.
BENCH_MODELS ?= dcgan progan stylegan
bench: $(STAMP)
	$(BIN)/dvc repro -q prepare
	$(BIN)/python -m benchmarks.steps $(BENCH_MODELS) $(BENCH_ARGS)

# The study's loop against a plain PyTorch loop (DCGAN, conv autoencoder; images/s and ratio), then each whole
# training stage from process start to model file, then DCGAN in 1 and 2 processes.
bench-loop: $(STAMP)
	$(BIN)/dvc repro -q prepare evaluator
	$(BIN)/python -m benchmarks.loop --stage $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.loop --processes 1 2

# The CUDA path on a GPU machine (a few minutes): one model a family trained and evaluated on CUDA, the steps of four
# models against the GPU's FP32/TF32 peak, a torchrun launch with nccl; one results file (benchmarks/gpu_check.json).
gpu-check: $(STAMP)
	$(BIN)/python -m benchmarks.gpu_check $(GPU_CHECK_ARGS)

# Two workers, whole modules each: the end-to-end module (collected first, tests/conftest.py) on one, the other
# modules on the other; each worker and the stages it starts use one thread. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Opens on the study's runs table: the experiment is tagged as model training (not GenAI), and the URL printed
# below goes straight to its runs.
UI_PORT ?= 5000
ui: $(STAMP)
	@$(BIN)/python -c "import mlflow, yaml; mlflow.set_tracking_uri('sqlite:///$(CURDIR)/mlflow.db'); \
		e = mlflow.get_experiment_by_name(yaml.safe_load(open('params.yaml'))['tracking']['experiment']); \
		print('runs table: http://127.0.0.1:$(UI_PORT)/#/experiments/' + e.experiment_id + '/runs' if e else 'no runs yet: run make study')" 2>/dev/null
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port $(UI_PORT)

# A real tracking server for a team or for parallel experiments: a SQLite backend and an artifact store it serves
# itself (clients upload and download artifacts through it, so they need no access to its disk). Loopback unless
# SERVER_HOST says otherwise (0.0.0.0: every interface; put it behind your network's access control). Any backend or
# artifact URI: make server SERVER_BACKEND=postgresql://... SERVER_ARTIFACTS=s3://bucket/mlflow
SERVER_HOST ?= 127.0.0.1
SERVER_PORT ?= 5001
SERVER_STORE ?= $(CURDIR)/mlflow-server
SERVER_BACKEND ?= sqlite:///$(SERVER_STORE)/mlflow.db
SERVER_ARTIFACTS ?= $(SERVER_STORE)/artifacts
server: $(STAMP)
	@mkdir -p $(SERVER_STORE)
	@echo "tracking server on http://$(SERVER_HOST):$(SERVER_PORT); stages log to it with:"
	@echo "  export MLFLOW_TRACKING_URI=http://$(SERVER_HOST):$(SERVER_PORT)"
	$(BIN)/mlflow server --host $(SERVER_HOST) --port $(SERVER_PORT) --workers 2 \
		--backend-store-uri $(SERVER_BACKEND) --artifacts-destination $(SERVER_ARTIFACTS) --serve-artifacts

clean-runs:  ## forget resume checkpoints (not results)
	rm -rf checkpoints
