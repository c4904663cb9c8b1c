# The two commands a newcomer runs: `make demo` and `make test`. Each builds the project
# virtual environment (.venv) on first use and reuses it afterwards.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision first, pinned to the builds this project is tested with; override for a CPU wheel
# index or another CUDA build, e.g. `make test TORCH_SPEC="torch torchvision"`.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: install test demo bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/text4seg demo --out demo_out $(DEMO_ARGS)

bench: $(STAMP)
	$(PY) bench/run_all.py

lint: $(STAMP)
	$(VENV)/bin/ruff check text4seg tests bench examples notebooks
	$(VENV)/bin/ruff format --check text4seg tests bench examples notebooks

clean:
	rm -rf $(VENV) demo_out build *.egg-info
