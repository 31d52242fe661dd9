# The two commands a newcomer runs: `make run` and `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench results lint format clean docs figures

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,data]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/sdeformer run

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile --durations=30

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

# every width-sweep JSON of docs/results (about an hour on a 2-core CPU; resumes when rerun)
results: $(STAMP)
	$(BIN)/python -m benchmarks.convergence --profile cpu

docs: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	$(BIN)/python notebooks/render.py --out build/notebooks
	$(BIN)/python -m mkdocs build --strict
	@echo "API reference, guides and notebooks: build/site/index.html"

figures: $(STAMP)
	$(BIN)/python examples/make_figures.py --out docs/figures

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) results .pytest_cache
