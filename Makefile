# The two commands a newcomer needs: `make demo` and `make test`. Each builds .venv when missing.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench unit integration faults clean services

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The local CPU build of torch first: an open torch requirement would pull a multi-GB GPU build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test,bench,text]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/factory demo

# Two lanes (pytest-xdist): every test on the shared Ray cluster in one, in order; the rest beside it
# (tests/conftest.py).
test: $(STAMP) services
	$(PY) -m pytest tests -q -n 2 --dist loadgroup --durations=20

unit: $(STAMP) services
	$(PY) -m pytest tests/unit -q

bench: $(STAMP) services
	$(PY) -m benchmarks

# Servers the tests start for themselves, from Debian's packages, installed only when missing:
# PostgreSQL (the catalog tests), Prometheus (the rollout analysis by PromQL) and Chromium
# (the demo report's browser test). The tests run their own throwaway servers, never the system's.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
services:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing PostgreSQL (for the catalog tests)"; \
	  $(SUDO) apt-get update -qq >/dev/null && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
	@command -v prometheus >/dev/null 2>&1 || { \
	  echo "installing Prometheus (for the rollout tests)"; \
	  $(SUDO) apt-get update -qq >/dev/null && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Chromium (for the report's browser test)"; \
	  $(SUDO) apt-get update -qq >/dev/null && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

clean:
	rm -rf $(VENV) .factory .pytest_cache
