# Two commands a newcomer needs: `make course` (the measured comparison) and `make test` (everything CI runs).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: setup course test unit notebooks lint lock clean-notebooks

setup: $(VENV)/.installed

# torch is installed first, pinned, so pip takes the CPU build instead of a multi-GB CUDA one.
$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==$$(sed -n 's/^torch==//p' constraints.txt)
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

course: setup
	$(PY) -m ftkit compare

test: setup lint unit notebooks

lint: setup
	$(PY) -m ruff check ftkit tests scripts notebooks colab

unit: setup
	$(PY) -m ftkit prefetch --profile ci
	FTKIT_PROFILE=ci $(PY) -m pytest tests -q --durations=10

notebooks: setup
	FTKIT_PROFILE=ci $(PY) -m pytest --nbmake --nbmake-timeout=900 --durations=0 -q notebooks colab

lock: setup
	{ sed -n '1,2p' constraints.txt; $(PY) -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu/torch==\1/'; } > constraints.new && mv constraints.new constraints.txt

clean-notebooks: setup
	$(PY) -m ftkit sync-notebooks --clear
