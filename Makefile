# The README's two set-up commands: `make demo` (install + the main job on the embedded
# digits data) and `make test` (install + the test suite). Everything installs into .venv with
# torch pinned by constraints.txt.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

# The main job: measure the disagreements, then remove them with the strategy compare
# recommends for one int8 model (retrain's default: settings, fallback, rounding, ranges).
demo: install
	$(BIN)/mitigate evaluate
	$(BIN)/mitigate retrain --selector margin

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check mitigate tests benchmarks examples
	$(BIN)/ruff format --check mitigate tests benchmarks examples

bench: install
	$(BIN)/python benchmarks/scan.py
	$(BIN)/python benchmarks/select_topk.py
	$(BIN)/python benchmarks/fit.py

clean:
	rm -rf $(VENV) runs .pytest_cache
