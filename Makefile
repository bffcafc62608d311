# The two commands of the quick start: `make demo` and `make test`. Both install what is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CGAN := $(BIN)/cgan
TORCH_PIN := torch==2.13.0
DEMO_DIR := demo-output
DEMO_GRIDS ?= 20
DEMO_SEED ?= 0
PIP := $(BIN)/pip --disable-pip-version-check
# pip's failures must fail make; its noise about this machine's extra index is dropped.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
QUIET := 2>&1 | { grep -v "is ignored: it is neither" || true; }

.PHONY: install demo test lock train clean

install: $(STAMP)

# torch first and alone (a CPU wheel; see requirements.lock), then the pinned rest without
# resolving, then the project itself in editable mode.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(TORCH_PIN) $(QUIET)
	$(BIN)/python -c "import torch, sys; sys.exit(torch.version.cuda is not None)" || \
	  (echo "a CUDA torch build is installed in $(VENV); remove $(VENV) and run make again" && false)
	$(PIP) install -q --no-deps -r requirements.lock $(QUIET)
	$(PIP) install -q --no-deps --no-build-isolation -e . $(QUIET)
	$(PIP) check
	touch $(STAMP)

demo: install
	rm -rf $(DEMO_DIR)
	$(CGAN) export --out $(DEMO_DIR)/cgan.onnx
	$(CGAN) bins --out $(DEMO_DIR)/bins --num-grids $(DEMO_GRIDS) --seed $(DEMO_SEED)
	$(CGAN) infer --model $(DEMO_DIR)/cgan.onnx --input $(DEMO_DIR)/bins --output $(DEMO_DIR)/out
	$(CGAN) grids --input $(DEMO_DIR)/out --out $(DEMO_DIR)/grids
	$(CGAN) quality --inputs $(DEMO_DIR)/bins --outputs $(DEMO_DIR)/out --out $(DEMO_DIR)
	@echo
	@echo "Grids (row = noise vector, column = digit 0..9): $(CURDIR)/$(DEMO_DIR)/grids/"
	@echo "Quality report: $(CURDIR)/$(DEMO_DIR)/quality.json"
	@echo "Perf record:    $$(ls $(CURDIR)/$(DEMO_DIR)/out/*/perf.json)"

test: install
	$(BIN)/python -m pytest

# Rewrite requirements.lock from the current .venv (after adding a dependency to it by hand).
lock:
	{ sed -n '1,3p' requirements.lock; $(PIP) freeze --all --exclude-editable | \
	  grep -v -iE '^(torch|cgan-airflow|pip)=='; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

# Re-train the committed models (not part of CI; see README "Models").
train: install
	$(BIN)/python scripts/train_classifier.py --out-dir models
	$(BIN)/python scripts/train_cgan.py --out models/cgan_generator.pth

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
