# Two commands: `make run` (all notebooks, headless) and `make test` (unit tests + nbval, smoke profile).
# Each sets itself up on a fresh machine: a .venv with hwlib and its extras installed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hwlib-installed
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))
PYTEST_ARGS ?=

.PHONY: setup run test bench report clean-runs

# uv installs from a persistent cache (~/.cache/uv): a fresh venv takes under a minute once the
# ~4 GB of torch wheels have been downloaded once, instead of minutes with pip.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet -e ".[notebooks,dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (hwlib)" >/dev/null
	@touch $@

setup: $(STAMP)

# Every notebook with profile `auto` (full on a GPU, quick on a CPU) into runs/: one after another on a GPU; on a CPU
# two at a time, each on half the cores: 01 in one lane, 02-04 after each other in the other (hwlib.nbtools.run_all;
# each one's log in runs/<name>.log).
# HWLIB_LANES=1 runs them one after another, OMP_NUM_THREADS sets the threads of each.
run: setup
	@HWLIB_PROGRESS=plain $(BIN)/python -m hwlib.nbtools run runs $(NOTEBOOKS)
	@echo "figures and GIFs are in figures/<notebook>/"

# Unit tests and nbval on every notebook (smoke profile). pytest's exit code 5 (nothing collected) fails.
# Smoke runs write their figures and checkpoints to a throwaway folder, never over the committed figures/;
# one torch thread per test process keeps the tiny smoke models fast even on a busy machine, and TEST_WORKERS
# processes (pytest-xdist; one per core of the 2-core CI machine) share the tests out by module, class or notebook
# (--dist loadscope: a notebook's cells stay in order in one kernel), in collection order, which puts the longest
# first (tests/conftest.py; xdist's default order, most tests first, left a dry run of minutes alone at the end).
# TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
test: setup
	@tmp=$$(mktemp -d); \
	HWLIB_PROFILE=smoke HWLIB_PROGRESS=off MPLBACKEND=Agg OMP_NUM_THREADS=1 \
	HWLIB_FIGURES=$$tmp/figures HWLIB_RUNS=$$tmp/runs \
	  $(BIN)/python -m pytest tests $(NOTEBOOKS) --nbval-lax --nbval-current-env -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder \
	  $(PYTEST_ARGS); rc=$$?; \
	rm -rf $$tmp; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# Self-contained HTML reports (figures embedded) under reports/: the executed notebooks in runs/ when there are
# any, else the committed ones in notebooks/. Hand one in or print it without JupyterLab.
report: setup
	@srcs="$$(ls runs/*.ipynb 2>/dev/null)"; [ -n "$$srcs" ] || srcs="$(NOTEBOOKS)"; \
	$(BIN)/python -m hwlib.nbtools report reports $$srcs

# benchmarks that need arguments (the notebook or the runs to analyse: their docstrings' Usage); `make bench` skips them
BENCH_NEEDS_RUNS := benchmarks/bench_seeds.py benchmarks/bench_stackgan_critic.py benchmarks/bench_stackgan_sampling.py

bench: setup
	@for b in benchmarks/bench_*.py; do \
	  case " $(BENCH_NEEDS_RUNS) " in *" $$b "*) echo "== $$b: skipped, it needs arguments (see its Usage)"; continue;; esac; \
	  echo "== $$b"; $(BIN)/python "$$b" || exit 1; done

clean-runs:
	rm -rf runs
