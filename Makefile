# The two commands of the README. Both set up .venv on a fresh machine first.
#   make run   download the dataset when missing, then run the numbered notebooks headless (profile auto)
#   make test       the whole test suite (unit, real data, JAX, Ray, kill-and-resume, the notebook series run once
#                   with papermill at the ci profile); in CI too (.ci/run)
#   make test-fast  the cheap part for iterating (under three minutes): leaves out the tests marked slow, realdata,
#                   jax, ray, kill, notebooks and browser (pyproject.toml [tool.pytest.ini_options] markers)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tinyconv-installed
PROFILE ?= auto

.PHONY: setup run test test-fast lab clean-venv chromium

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# The notebooks name the kernel "tinyconv"; installing it into the venv lets papermill and
	# the venv's JupyterLab find it without touching the user's global Jupyter set-up.
	$(BIN)/python -m ipykernel install --sys-prefix --name tinyconv --display-name "Python (tinyconv)"
	@touch $(STAMP)

run: setup
	$(BIN)/tinyconv download
	$(BIN)/tinyconv notebooks --profile $(PROFILE)

test: setup chromium
	$(BIN)/python -m pytest tests -n 2 --dist loadfile --no-loadscope-reorder

test-fast: setup
	$(BIN)/python -m pytest tests -n 2 --dist loadfile --no-loadscope-reorder -m "not (slow or realdata or jax or ray or kill or notebooks or browser)"

# The browser test (tests/test_browser.py) drives the system's Chromium. Installed here when missing and this is
# root with apt-get (CI, a fresh Debian machine); elsewhere the test says how to install it.
chromium:
	@command -v chromium > /dev/null || command -v chromium-browser > /dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null) ; } || \
	  echo "note: no chromium; tests/test_browser.py will fail until it is installed (apt-get install chromium)"

lab: setup
	$(BIN)/jupyter lab notebooks

clean-venv:
	rm -rf $(VENV)
