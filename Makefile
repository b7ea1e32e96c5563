# Two commands on a fresh machine with Python 3:  `make demo`  and  `make test`.
# The venv is (re)installed only when pyproject.toml changes, so both are idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo robustness calibration test test-slow lint bench bench-compare mutation clean constraints

# constraints.txt pins the versions the tests passed on (regenerate: make constraints).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# What the demo, robustness and calibration suites need: the base install and captum for the
# gallery's Grad-CAM (`make test` adds the dev tools, launchers and TensorBoard on top).
RUN_STAMP := $(VENV)/.installed-run
$(RUN_STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[explain]'
	touch $(RUN_STAMP)

# The demo, then the explanation gallery of 4 test cases of its SSN (docs/explain.md): both images,
# cross-attention maps and Grad-CAM per head, an index of true and predicted labels.
demo: $(RUN_STAMP)
	$(BIN)/ssnbench run suites/demo.yaml
	$(BIN)/ssnbench explain results/demo/ssn-prior__seed0.safetensors --cases 4 --out reports/demo/explain

# Accuracy under imaging shifts of each modality (docs/explain.md); its own suite, slower than the demo.
robustness: $(RUN_STAMP)
	$(BIN)/ssnbench run suites/robustness.yaml

# Power and false positives of the fusion-vs-derm claim at planted clinical-informativeness levels
# (docs/planted.md); slower than the demo (one demo-sized run per level).
CAL_LEVELS ?= 0,0.5,1
calibration: $(RUN_STAMP)
	$(BIN)/python -m ssnbench.calibration suites/calibration.yaml --levels $(CAL_LEVELS)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2 --benchmark-disable tests

# The `slow` cases (e.g. the reliability battery's real signals against a running suite, the wheel
# build); `make test` skips the battery's slow cases (docs/reliability.md).
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --benchmark-disable -m slow tests

clean:
	rm -rf $(VENV) .ssnbench-cache mutants

# Record the versions installed now (after `make test` passed) as the tested set; local build tags
# (+cu130) are dropped so the pins also match the PyPI builds.
constraints:
	{ echo "# Versions the test suite passed on (make constraints; used by make setup: pip install -c)"; \
	  $(BIN)/python -m pip list --format=freeze --exclude-editable | grep -v -E '^(pip|setuptools|wheel)==' | sed 's/+[^ ]*$$//'; } > constraints.txt

# Speed cases (tests/benchmarks/). `make bench` times them and saves the run under .benchmarks/;
# `make bench-compare` times them again and fails when a case's median is more than BENCH_FAIL %
# slower than the last saved run (cases marked benchmark_threshold(PCT) use their own PCT).
BENCH_FAIL ?= 10
BENCH_ARGS := -q -p no:xdist tests/benchmarks --benchmark-only --benchmark-sort=name \
	--benchmark-columns=median,iqr,ops,rounds --benchmark-max-time=0.5 --benchmark-min-rounds=10

bench: $(STAMP)
	$(BIN)/python -m pytest $(BENCH_ARGS) --benchmark-autosave

bench-compare: $(STAMP)
	@ls .benchmarks/*/*.json >/dev/null 2>&1 || { echo "bench-compare: no saved run in .benchmarks/; run 'make bench' first" >&2; exit 2; }
	$(BIN)/python -m pytest $(BENCH_ARGS) --benchmark-compare --benchmark-compare-fail=median:$(BENCH_FAIL)%

# Mutation testing of the core modules with mutmut (docs/testing.md); not part of `make test` or CI.
# One mutmut run over the scopes of scripts/mutation.py, each mutant against the tests that call its
# function; MUTATION_JOBS mutants in parallel. Results are kept in mutants/ (unchanged functions are
# not re-run); `rm -rf mutants` first for a fresh measurement.
# MUTATION_ONLY=losses (or any scope of scripts/mutation.py) runs one module.
MUTATION_JOBS ?= 2
MUTATION_ONLY ?=
mutation: $(STAMP)
	$(BIN)/python -c "import mutmut" 2>/dev/null || $(BIN)/python -m pip install -q -c constraints.txt -e '.[mutation]'
	$(BIN)/python scripts/mutation.py --jobs $(MUTATION_JOBS) $(foreach s,$(MUTATION_ONLY),--only $(s))
