# bigtrain: `make install` then `make train`; `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
# torch comes first and pinned: an unpinned torch would pull a multi-GB CUDA build. Change it for a GPU box,
# e.g. make install TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>".
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
RECIPE ?= cnn/glyphs
PYTEST_ARGS ?=

.PHONY: install train test test-fast lint format bench mutate gpu-check docker clean

install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	@# -qq: setuptools notes every editable install as a warning; errors still show.
	$(BIN)/pip install -qq -e ".[dev]"
	@$(BIN)/bigtrain --version

train:
	$(BIN)/bigtrain fit --recipe $(RECIPE)

# Two workers on two cores (each test uses one thread); the SLURM tests then run alone, since they share
# one test cluster and time its signals.
test:
	$(BIN)/pytest -n 2 -m "not cluster" $(PYTEST_ARGS)
	$(BIN)/pytest -m cluster $(PYTEST_ARGS)

test-fast:
	$(BIN)/pytest -m "not slow and not cluster" $(PYTEST_ARGS)

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench:
	$(BIN)/python -m benchmarks.run

# Mutation testing of the modules that guard correctness (hours on 2 cores; not part of `make test`).
# MUTATE_ARGS="--modules batch manifest" runs some; the summary goes to benchmarks/results/mutate-<date>.md.
MUTATE_ARGS ?=
mutate:
	$(BIN)/python -m benchmarks.mutate $(MUTATE_ARGS)

# On a GPU box without this repo's venv (e.g. a shared image), the system python3 runs it from source.
GPU_PY ?= $(shell test -x $(BIN)/python && echo $(BIN)/python || echo python3)
GPU_OUT ?= gpu-check-out
gpu-check:
	@$(GPU_PY) -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'make gpu-check needs a CUDA GPU')"
	PYTHON=$(GPU_PY) bash benchmarks/gpu_check.sh $(GPU_OUT)

docker:
	@command -v docker >/dev/null || { echo "make docker: no docker engine here"; exit 2; }
	docker build -f docker/Dockerfile -t bigtrain:latest .
	docker build -f docker/Dockerfile.cpu -t bigtrain:cpu .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache runs lightning_logs
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
