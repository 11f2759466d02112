# foldwise: `make run` sets up and runs the whole pipeline; `make test` sets up and runs the tests.
# Both start from nothing but Python 3.11 and make: the venv, the packages and (for the tests) the
# browser are installed here, never assumed.
PYTHON ?= python3.11
# Installs skip byte-compiling every file (--no-compile below); Python caches a module's bytecode the
# first time it is imported instead. An environment with PYTHONDONTWRITEBYTECODE=1 (CI's, and this
# machine's shell) would then recompile torch, timm and the rest in every process: torch's import
# took 6 s instead of 3 and timm's 17 s instead of 6, and the suite twice as long.
unexport PYTHONDONTWRITEBYTECODE
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup setup-test browser setup-test-and-browser run lint test test-fast clean

# --no-compile: Python compiles (and caches) a package's modules when they are first imported, not
# every file of torch, ray and the rest at install time (most are never imported here).
setup: $(VENV)/.installed

# constraints.txt pins torch and torchvision to the files on the build machines' disk (pyproject.toml
# only gives the supported range, so foldwise installs beside a user's own torch).
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check --no-compile -q -c constraints.txt -e .
	touch $@

# The tests also need the optional Ray extra (parallel folds, distributed inference on a local cluster):
# one install of both (one dependency resolution), which also satisfies `setup`.
setup-test: $(VENV)/.installed-test

$(VENV)/.installed-test: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check --no-compile -q -c constraints.txt -e '.[dev,ray]'
	touch $@ $(VENV)/.installed

# The report tests drive Debian's headless Chromium through chromedriver and render every page of
# reports/report.pdf with poppler's pdftoppm. Install what is missing when we may (root or
# password-less sudo, apt-get present); otherwise say what to install.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 && command -v pdftoppm >/dev/null 2>&1; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make: no chromium/chromedriver/pdftoppm and no apt-get: install Chromium, its driver and poppler-utils for the report tests" >&2; \
	else \
	  if [ "$$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	  else echo "make: chromium/chromedriver/pdftoppm missing; run as root: apt-get install chromium chromium-driver poppler-utils" >&2; exit 0; fi; \
	  echo "make: installing Debian's chromium, chromium-driver and poppler-utils (for the report tests; about a minute)"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium chromium-driver poppler-utils >/dev/null; \
	fi

run: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

# Two pytest workers (pytest-xdist), each taking whole test files (one project per file is built
# once; tests/conftest.py keeps the Kaggle-emulator files on one worker), each with one torch thread: the tests' tiny models gain nothing from a second thread, and
# two workers with two threads each would oversubscribe two cores.
TEST_WORKERS ?= 2

# pip and apt at once: one unpacks wheels from this disk while the other fetches Debian's packages.
setup-test-and-browser:
	@$(MAKE) --no-print-directory -j2 setup-test browser

# The layer contracts (import-linter, [tool.importlinter] in pyproject.toml) and ruff ([tool.ruff]).
lint: setup-test
	$(BIN)/ruff check pipeline serve tests
	$(BIN)/lint-imports --no-cache

test: setup-test-and-browser lint
	PATH="$(CURDIR)/$(BIN):$$PATH" OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

# The unit tests alone (tests/unit/: in-process, well under a minute).
test-fast: setup-test
	PATH="$(CURDIR)/$(BIN):$$PATH" OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) tests/unit

clean:
	rm -rf $(VENV)
