# Runway: `make demo` starts the console on a seeded database; `make test` runs the whole suite;
# `make lint` checks style, the dependency rules and the types.
# Both install what is missing first (bin/setup).
export UV_PYTHON_DOWNLOADS := never
# Bytecode caches: without them every process (each worker, each manage.py a test starts)
# compiles ~800 modules again, about 2.5 s apiece here. The revision renderer writes none.
unexport PYTHONDONTWRITEBYTECODE
PY := .venv/bin/python

.PHONY: setup demo test lint bench clean

setup:
	@bin/setup

demo: setup
	$(PY) -m devstack demo

# Three pytest-xdist workers on two cores: many tests wait on real processes (a worker's start,
# a reaper's timeout, Chromium), so a third worker overlaps those waits. Each xdist worker starts
# its own PostgreSQL cluster, Redis, moto server and Celery worker. `make test PYTEST_ARGS=-n0`
# runs it in one process; `PYTEST_ARGS="tests/backups -n0"` a part of it.
PYTEST_ARGS ?= -n 3 --dist worksteal
test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# The design's rules as checks: style, the import contracts (pyproject.toml, [tool.importlinter])
# and the types. Each fails CI on its own.
lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports
	.venv/bin/mypy

bench: setup
	$(PY) bench/history_graph.py
	$(PY) bench/audit_export.py
	$(PY) bench/lint_chain.py
	$(PY) bench/stalls.py

clean:
	rm -rf .runway staticfiles test-artifacts
