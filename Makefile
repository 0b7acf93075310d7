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

# Servers the tests run for real, from Debian packages, installed when missing (as root).
# One idempotent line per server.
services:
	command -v prometheus >/dev/null || apt-get install -y prometheus

test: $(STAMP) services
	$(PY) -m pytest tests -q

unit: $(STAMP)
	$(PY) -m pytest tests/unit -q

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) .factory .pytest_cache
