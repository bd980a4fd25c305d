# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test venv bench gpu-check clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) recipes/sela_digits.py --config configs/sela/digits.yaml

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) benchmarks/sinkhorn.py
	$(PY) benchmarks/vq.py
	$(PY) benchmarks/sela_round.py
	$(PY) benchmarks/point2mask.py

# On a machine with a CUDA GPU (no package download needed: GPU_PY=python3 uses an existing torch).
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
gpu-check:
	$(GPU_PY) -m pytest -q -ra tests/gpu
	$(GPU_PY) benchmarks/gpu.py

clean:
	rm -rf $(VENV) runs .pytest_cache
