# The two commands of the quick start: `make demo` and `make test`. Both install what is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PIN := torch==2.13.0
DEMO_DIR := demo-output
DEMO_GRIDS ?= 10
DEMO_SEED ?= 0
PIP := $(BIN)/pip --disable-pip-version-check
# pip's failures must fail make; its noise about this machine's extra index is dropped.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
QUIET := 2>&1 | { grep -v "is ignored: it is neither" || true; }

.PHONY: install demo test check lint lock train clean up down bench bench-gpu

install: $(STAMP)

# torch first and alone (a CPU wheel; see requirements.lock), then the pinned runtime
# environment and the test/bench/tool packages (requirements-dev.lock) without resolving, then
# the project itself in editable mode. The images install requirements.lock only.
$(STAMP): requirements.lock requirements-dev.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(TORCH_PIN) $(QUIET)
	$(BIN)/python -c "import torch, sys; sys.exit(torch.version.cuda is not None)" || \
	  (echo "a CUDA torch build is installed in $(VENV); remove $(VENV) and run make again" && false)
	$(PIP) install -q --no-deps -r requirements.lock -r requirements-dev.lock $(QUIET)
	$(PIP) install -q --no-deps --no-build-isolation -e . $(QUIET)
	$(PIP) check
	touch $(STAMP)

demo: install
	$(BIN)/python scripts/demo.py --num-grids $(DEMO_GRIDS) --seed $(DEMO_SEED) --out $(DEMO_DIR)

# Two workers, one test file each (pytest-xdist --dist loadfile: a file's session fixtures start
# once per worker); the 40 slowest tests are listed at the end.
test: lint install
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder -p no:cacheprovider --durations=40

# The inner loop: lint and the domain library's fast unit tests (no Airflow, no S3 server), on
# every core (pytest-xdist); the tests marked slow run in `make test`.
check: lint
	$(BIN)/python -m pytest -q -n auto -m "not slow" -p no:cacheprovider tests/cgan tests/test_import_contracts.py \
	  tests/test_lint_config.py

# ruff (pycodestyle, pyflakes, isort, bugbear, pyupgrade, no Airflow in cgan/), the layer contracts
# of DESIGN.md (import-linter) and mypy; see pyproject.toml.
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

# Rewrite requirements.lock (runtime) and requirements-dev.lock (tests, tools) from the current
# .venv, after adding a dependency to pyproject.toml and installing it by hand; then the record
# of the runtime lock's wheels for the images' platforms (needs PyPI; tests/deploy/test_locks.py).
lock:
	$(BIN)/python scripts/locks.py split
	$(BIN)/python scripts/locks.py wheels

# Re-train the committed models (not part of CI; see docs/models.md).
train: install
	$(BIN)/python scripts/train_classifier.py --out-dir models
	$(BIN)/python scripts/train_cgan.py --out models/cgan_generator.pth

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache var

# Airflow standalone (SQLite, LocalExecutor) + the local S3 server, DAG unpaused; `make down` stops both.
up: install
	$(BIN)/python scripts/local_stack.py up

down:
	$(BIN)/python scripts/local_stack.py down

# Benchmarks (numbers, not pass/fail): bench/results.json, bench/bench.png and a table.
# The peers section (OpenVINO) needs requirements-bench.lock: installed here, never by `make install`.
bench: install
	$(PIP) install -q --no-deps -r requirements-bench.lock $(QUIET)
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)

# On a machine with an NVIDIA GPU (bench/gpu/gpu_results.json); elsewhere it says there is none.
# Without the venv (a GPU box with its own PyTorch): scripts/bench_gpu.sh
bench-gpu: install
	PYTHON=$(BIN)/python scripts/bench_gpu.sh $(BENCH_ARGS)
