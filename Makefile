# lifelong: `make run` sets up .venv and serves with the embedded defaults; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH_VERSION := 2.13.0
STAMP  := $(VENV)/.installed
CHROMIUM_STAMP := $(VENV)/.chromium
# apt-get needs root: through sudo when make runs as another user.
SUDO   := $(shell test "$$(id -u)" -eq 0 || echo sudo)

.PHONY: run test test-learning lint bench bench-ingest bench-replay bench-stream bench-frontier clean venv

venv: $(STAMP)

# PyTorch goes in first, pinned, so pip takes the local CPU wheel instead of a CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -e '.[test]'
	touch $(STAMP)

# The dashboard test drives Debian's Chromium through Playwright (executable_path
# /usr/bin/chromium, no browser download): installed here when it is missing.
$(CHROMIUM_STAMP): $(STAMP)
	command -v chromium >/dev/null || ($(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	touch $(CHROMIUM_STAMP)

run: $(STAMP)
	$(VENV)/bin/lifelong serve --demo

# Three pytest-xdist workers: the unit tests keep both cores busy, the end-to-end tests
# partly wait on servers and subprocesses. On 2026-12-07: 11.3 minutes with 2 workers,
# 9.8 with 3. worksteal: an idle worker takes queued tests from a busy one. Tried and
# worse (about 12 minutes): the longest tests first, with `--dist load` (its first
# hand-out put them all in one worker's batch) or one test at a time (three end-to-end
# servers and learners at once stretch each other's waits, and their idle polling with
# them).
# The learning-outcome runs (marker `learning`: the teacher's focus with a noise bucket, a
# user's own chat model trained to promotion) take 2-5 minutes each alone and twice that
# beside the rest on 2 cores, which put `make test` over its 15 minutes: they run in
# `make test-learning` (about 6 minutes here), and test_learning_loop and test_poisoning
# keep a learner trained to promotion, and rejected by the alignment gate, in `make test`.
TEST_WORKERS ?= 3
test: $(STAMP) $(CHROMIUM_STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not learning"

test-learning: $(STAMP)
	$(PY) -m pytest -q -n 2 -m learning

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench-ingest: $(STAMP)
	$(PY) bench/ingest.py --backend both

# cpprb (the C++ baseline of the replay benchmark) is a benchmark-only dependency.
bench-replay: $(STAMP)
	$(PIP) install -q -e '.[bench]'
	$(PY) bench/replay.py --backend both

# The continual-learning benchmark: the 4 main policies x 5 seeds, paired against uniform
# (about an hour here); `python bench/stream.py --all` adds the other policies and ablations.
bench-stream: $(STAMP)
	$(PY) bench/stream.py

# The learning/retention frontier: every recipe x 3 never-seen families x 3 seeds, marks at
# 5 and 15 CPU-minutes (more than 9 hours here; see the README for the shorter run).
bench-frontier: $(STAMP)
	$(PY) bench/frontier.py

bench: bench-ingest bench-replay bench-stream

clean:
	rm -rf $(VENV) lifelong-data .pytest_cache .mypy_cache .ruff_cache
