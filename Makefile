# Set-up commands: `make demo` and `make test` create .venv when it is missing,
# install the CPU build of torch (override with TORCH=...) and ddcat with its test extras.
PYTHON ?= python3
TORCH ?= torch==2.13.0
# Test workers (pytest-xdist): one per core by default, each torch process one thread (tests/conftest.py).
TEST_WORKERS ?= auto
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ddcat-installed

.PHONY: install demo demo-quick test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m ddcat demo --out demo_out

demo-quick: $(STAMP)
	$(PY) -m ddcat demo --quick --out demo_out/quick

test: $(STAMP)
	$(PY) -m pytest tests -n $(TEST_WORKERS) --dist loadfile --durations=15

bench: $(STAMP)
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) demo_out bench_out
