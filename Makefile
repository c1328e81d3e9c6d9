# Two commands do all the set-up on a fresh machine:
#   make run    installs into .venv on first use, then runs the main job on the offline data
#   make test   installs into .venv on first use, then runs the test suite
# Bring your own torch: `make TORCH_SPEC= test` installs whatever torch pip resolves (or an
# existing one, with VENV_FLAGS=--system-site-packages).

PYTHON ?= python3
VENV ?= .venv
VENV_FLAGS ?=
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
ARGS ?=
PYTEST_ARGS ?= -m "not slow"
BIN := $(VENV)/bin

.PHONY: run test test-all install clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	if [ -n "$(TORCH_SPEC)" ]; then $(BIN)/python -m pip install --quiet $(TORCH_SPEC); fi
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

run: install
	$(BIN)/python -m segnas.run searcher=autodeeplab $(ARGS)

test: install
	WANDB_MODE=offline $(BIN)/python -m pytest $(PYTEST_ARGS)

test-all: PYTEST_ARGS =
test-all: test

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
