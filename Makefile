# Set-up commands: `make demo` and `make test` create .venv when it is missing,
# install torch (override with TORCH=...; a build that lives on another package index, such as
# PyTorch's CUDA wheels, also needs TORCH_INDEX=URL) and ddcat with its test extras.
PYTHON ?= python3
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
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
	$(PY) -m pip install -q $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps adv-lib==0.2.8
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
