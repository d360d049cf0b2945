# Set-up and everyday tasks. Each target creates .venv on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The CPU build of torch; an unpinned torch pulls a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0
DEMO_OUT := demo-out

.PHONY: demo test lint install install-test clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: $(PY) pyproject.toml
	$(PIP) install --quiet $(TORCH_PIN)
	$(PIP) install --quiet -e .
	# bytecode now: an editable install has none, and where PYTHONDONTWRITEBYTECODE is set every run
	# would compile the package again (0.1 s of each CLI start)
	$(PY) -m compileall -q raqcodec
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# Encode and decode matplotlib's bundled photo of Grace Hopper (no download) at 0.3 bpp.
demo: install
	@mkdir -p $(DEMO_OUT)
	@sample=$$($(PY) -c "import matplotlib.cbook as c; print(c.get_sample_data('grace_hopper.jpg', asfileobj=False))"); \
	set -e; \
	$(PY) -m raqcodec encode --bpp 0.3 "$$sample" -o $(DEMO_OUT)/grace_hopper.raq --force; \
	$(PY) -m raqcodec decode $(DEMO_OUT)/grace_hopper.raq -o $(DEMO_OUT)/grace_hopper.png --force; \
	$(PY) -m raqcodec info $(DEMO_OUT)/grace_hopper.raq; \
	$(PY) -m raqcodec compare "$$sample" $(DEMO_OUT)/grace_hopper.png

# Lint (ruff), formatting (ruff format) and types (mypy), as configured in pyproject.toml.
lint: install-test
	$(PY) -m ruff check raqcodec tests benchmarks
	$(PY) -m ruff format --check raqcodec tests benchmarks
	$(PY) -m mypy

test: lint
	$(PY) -m pytest -q --durations=15

clean:
	rm -rf $(VENV) $(DEMO_OUT) build *.egg-info raqcodec/*.so
