# Two commands a new user needs: `make demo` and `make test`. Both create the virtual environment in
# .venv on first use and install everything into it (torch first: on CPU-only machines the pinned
# version is a local CPU build; an unpinned torch would pull several GB of CUDA packages).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,deepspeed,eval
STAMP := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)
DEMO_DIR ?= demo_output
PYTEST_ARGS ?=
# The reduced demo run goes first, alone, on every core (tests/test_demo.py); the rest in two workers.
DEMO_TESTS := tests/test_demo.py

export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test lint bench clean

$(STAMP):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/trl-implicit-prm demo --output-dir $(DEMO_DIR)

test: $(STAMP)
	$(VENV)/bin/ruff check trl_implicit_prm tests bench recipes
	$(VENV)/bin/ruff format --check trl_implicit_prm tests bench recipes
	$(PY) -m pytest $(DEMO_TESTS) $(PYTEST_ARGS)
	$(PY) -m pytest -n 2 --ignore=$(DEMO_TESTS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check trl_implicit_prm tests bench recipes
	$(VENV)/bin/ruff format --check trl_implicit_prm tests bench recipes

bench: $(STAMP)
	$(PY) bench/scoring.py
	$(PY) bench/tokenization.py
	$(PY) bench/training.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache $(DEMO_DIR)
