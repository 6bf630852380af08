# The two set-up commands: `make demo` and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The DuckLake tests run their work in subprocesses on duckdb 1.5.5 (the DuckLake extensions on
# PyPI exist for 1.5.x only, the project runs 2.0): this folder goes first on their PYTHONPATH.
DUCKLAKE_VERSION := 1.5.5
DUCKLAKE_DEPS := .ducklake-deps
DUCKLAKE_STAMP := $(DUCKLAKE_DEPS)/.installed-$(DUCKLAKE_VERSION)
DUCKLAKE_PACKAGES := duckdb==$(DUCKLAKE_VERSION) duckdb-extension-ducklake==$(DUCKLAKE_VERSION) \
	duckdb-extension-postgres==$(DUCKLAKE_VERSION)

.PHONY: install test demo lint bench clean ducklake-deps

# Quiet: pip's errors still show (-qq hides its info and warnings, such as an index it skips).
$(STAMP): pyproject.toml
	@echo "installing grafient-pipeline and its dependencies into $(VENV) (about a minute)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -qq --upgrade pip
	@$(BIN)/python -m pip install -qq -e '.[dev,postgres]'
	@touch $(STAMP)

install: $(STAMP)

# Installed aside, then moved in whole: an interrupted install leaves no half folder behind.
$(DUCKLAKE_STAMP): $(STAMP)
	@echo "installing duckdb $(DUCKLAKE_VERSION) and its DuckLake extensions into $(DUCKLAKE_DEPS)"
	@rm -rf $(DUCKLAKE_DEPS).tmp
	@$(BIN)/python -m pip install -qq --target $(DUCKLAKE_DEPS).tmp $(DUCKLAKE_PACKAGES)
	@rm -rf $(DUCKLAKE_DEPS) && mv $(DUCKLAKE_DEPS).tmp $(DUCKLAKE_DEPS)
	@touch $(DUCKLAKE_STAMP)

ducklake-deps: $(DUCKLAKE_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Two workers (the CI machine's two cores; tests wait on servers and subprocesses as much as they
# compute); --dist loadfile keeps each file's tests, and its module fixtures, on one worker.
test: lint $(DUCKLAKE_STAMP)
	$(BIN)/pytest -n 2 --dist loadfile

demo: $(STAMP)
	@$(BIN)/grafient demo

clean:
	rm -rf $(VENV) $(DUCKLAKE_DEPS) .pytest_cache .ruff_cache
