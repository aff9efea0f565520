# rampwatch: `make run` (everything on embedded defaults) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test chromium soak lint bench clean

$(STAMP): setup.cfg pyproject.toml requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m devkit

# Two test processes (pytest-xdist), each test file whole in one of them (its module fixtures
# made once): most of a test's time is waiting on the processes and servers it starts.
test: $(STAMP) chromium
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# The console's browser tests drive Debian's chromium (tests/console/): installed when missing;
# where it cannot be (not root, no apt), one line says so and the tests skip.
chromium:
	@command -v chromium >/dev/null 2>&1 || { export DEBIAN_FRONTEND=noninteractive; (apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 \
	  || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; }) \
	  && echo "installed Debian's chromium for the browser tests" \
	  || echo "could not install Debian's chromium (apt-get install chromium): the browser tests will skip"; }

# Minutes of traffic and faults through real web, worker and clock processes, then every
# order against the sandboxes' truth (devkit/soak/, prints one table); then the fault runs
# too long for make test (tests/faults/soak_faults.py). About 10 minutes in all.
soak: $(STAMP)
	$(BIN)/python -m devkit.soak
	$(BIN)/python -m pytest -q tests/faults/soak_faults.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Every bench/bench_*.py in turn, each printing JSON lines (shown as they come), then one
# table of them all (bench/table.py; exits 1 when a benchmark failed its checks). wrk, for
# bench_ingest, is installed when missing (Debian's, as root). About 10 minutes on 2 cores.
bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || { export DEBIAN_FRONTEND=noninteractive; (apt-get install -y wrk >/dev/null 2>&1 \
	  || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y wrk >/dev/null 2>&1; }) \
	  && echo "installed Debian's wrk for bench_ingest" \
	  || echo "could not install Debian's wrk (apt-get install wrk, as root): bench_ingest will say it is skipped"; }
	@for b in bench/bench_*.py; do $(BIN)/python $$b || echo "{\"bench\": \"$$b\", \"ok\": false, \"error\": \"exited $$?\"}"; done \
	  | $(BIN)/python bench/table.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .hypothesis
