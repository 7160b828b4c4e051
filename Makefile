# Every target creates its own virtual environment when it is missing.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test test-long demo bench bench-quick lint clean venv

$(BIN)/updaterd: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

venv: $(BIN)/updaterd

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The full counts of the randomized crash tests (RELIABILITY.md row 57: 50 random kills).
test-long: venv
	UPDATERD_KILL_TRIALS=50 $(BIN)/python -m pytest -s $(PYTEST_ARGS)

demo: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

bench: venv
	$(BIN)/python -m bench.run

bench-quick: venv
	$(BIN)/python -m bench.run --quick

lint: venv
	$(BIN)/ruff check daemon ctl tests bench scripts
	$(BIN)/mypy

clean:
	rm -rf $(VENV) demo-run build dist *.egg-info
