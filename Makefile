# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch must be installed before anything that depends on torch, or pip
# resolves a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/translate_numbers.py

test: $(VENV)/.installed
	$(PY) -m pytest -n 2 graphattn tests

bench: $(VENV)/.installed
	$(PY) benchmarks/patterns.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
