# Two commands a newcomer needs: `make course` (the measured comparison) and `make test` (everything CI runs).
# Two more: `make lab` (the notebooks in JupyterLab) and `make site` (the executed course as static HTML).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# make site: the profile whose numbers the site shows (cpu: a laptop's sizes; CI builds the site with ci).
PROFILE ?= cpu
# make lab: JupyterLab's port on 127.0.0.1.
PORT ?= 8888
# Notebooks as nbmake executed them: copies, so the committed notebooks stay clean. The site is built from them.
EXECUTED := build/executed
SITE := build/site
# Seconds one notebook may run under nbmake before it fails: in CI (ci profile), and in `make site` (any profile; the
# cpu profile's 2.1 took 990 s alone on 2 cores, longer beside another notebook).
NB_TIMEOUT ?= 900
SITE_NB_TIMEOUT ?= 3600
# Notebooks run NB_WORKERS at a time (pytest-xdist), each kernel on NB_THREADS cores: on 2 cores, two one-core kernels
# ran all 20 in 633 s of wall clock, their times summing to 21 min (a fresh clone's make test, 2026-11-29).
# NB_WORKERS=1 NB_THREADS=2 runs them one by one, as a learner does. Chapter 3 runs in order (see execute).
NB_WORKERS ?= 2
NB_THREADS ?= 1
export PYTHONUNBUFFERED := 1

# make bench: the profiles whose batches the benchmark measures (results/bench.json keeps one entry per profile).
BENCH_PROFILES ?= ci cpu

.PHONY: setup prepare course bench test check browser unit notebooks notebooks-t4 lint lock clean-notebooks lab site site-html site-test \
	gpu-check

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

# Everything CI runs. Its browser tests need headless Chromium: installed first where it can be, else it stops before
# anything runs. On a fresh machine Chromium (apt) and the virtual environment (pip) download side by side.
test: prepare lint unit notebooks notebooks-t4 site-html site-test

prepare:
	@$(MAKE) --no-print-directory -j2 browser setup

# The edit-test loop: lint and the unit tests that train nothing long (under 2 minutes); make test stays the full gate.
check: setup lint
	FTKIT_PROFILE=ci $(PY) -m pytest tests -q -m "not slow" --ignore=tests/test_site.py -p no:cacheprovider

browser:
	@bash scripts/ensure_chromium.sh

lint: setup
	$(PY) -m ruff check ftkit tests scripts notebooks colab docs

# Two workers on one core each (xdist, a file to a worker), then the explorer's tests alone: its JupyterLab run trains
# in a kernel and, beside another worker, missed its 90-s timeout. 181 s one at a time on a fresh clone (2026-12-06).
unit: setup
	$(PY) -m ftkit prefetch --profile ci
	FTKIT_PROFILE=ci OMP_NUM_THREADS=$(NB_THREADS) MKL_NUM_THREADS=$(NB_THREADS) $(PY) -m pytest tests -q -n $(NB_WORKERS) \
		--dist loadfile --durations=10 --ignore=tests/test_site.py --ignore=tests/test_explorer.py
	FTKIT_PROFILE=ci $(PY) -m pytest tests/test_explorer.py -q

# Every notebook runs once, as a copy under $(EXECUTED) that keeps its outputs; the site is built from those copies.
# Chapter 3's notebooks share their measured rows, so they run in order in a pytest of their own, beside the others
# (scripts/execute_notebooks.sh).
define execute
	rm -rf $(EXECUTED) && mkdir -p $(EXECUTED) && cp -r notebooks colab $(wildcard results theory.md) $(EXECUTED)/
	PY=$(PY) bash scripts/execute_notebooks.sh $(EXECUTED) $(1) $(2) $(NB_WORKERS) $(NB_THREADS)
	$(PY) docs/build_site.py record $(EXECUTED) --profile $(1) --workers $(NB_WORKERS) --threads $(NB_THREADS)
endef

notebooks: setup
	$(call execute,ci,$(NB_TIMEOUT))

# The T4 emulation lane: the notebooks a T4 broke before (QLoRA, devices, the model's shape) and the capstone, run as
# a Colab T4 runs them but on the CPU (FTKIT_EMULATE=t4: fp16 autocast, a GradScaler that refuses what CUDA's refuses,
# the 4-bit path, a 12-layer second model shape; see ftkit/core/emulation.py), at the ci profile's sizes, with one seed
# per compared arm (FTKIT_SEEDS=1: the lane checks code paths, not verdicts). Copies under $(EXECUTED_T4); the site
# does not use them.
EXECUTED_T4 := build/executed-t4
T4_LANE := notebooks/01_methods/03_three_methods_side_by_side.ipynb notebooks/01_methods/04_adapters_switchable.ipynb \
	notebooks/02_hyperparameters/02_batch_size.ipynb notebooks/02_hyperparameters/03_rank_and_alpha.ipynb \
	notebooks/02_hyperparameters/05_solutions.ipynb colab/capstone_qlora_t4.ipynb

notebooks-t4: setup
	rm -rf $(EXECUTED_T4) && mkdir -p $(EXECUTED_T4) && cp -r notebooks colab $(wildcard results theory.md) $(EXECUTED_T4)/
	cd $(EXECUTED_T4) && FTKIT_EMULATE=t4 FTKIT_PROFILE=ci FTKIT_SEEDS=1 OMP_NUM_THREADS=$(NB_THREADS) MKL_NUM_THREADS=$(NB_THREADS) \
		$(abspath $(PY)) -m pytest --nbmake -n $(NB_WORKERS) --dist worksteal --nbmake-timeout=$(NB_TIMEOUT) --overwrite \
		--durations=0 -q -p no:cacheprovider $(T4_LANE)

# JupyterLab on http://127.0.0.1:$(PORT) (this machine only), opened on notebook 00; Ctrl-C stops it.
lab: setup
	$(PY) -m jupyter lab --ip=127.0.0.1 --port=$(PORT) --ServerApp.root_dir=. $(if $(filter 0,$(shell id -u)),--allow-root) \
		notebooks/00_start_here.ipynb

# Its verdicts are kept as results/claims-$(PROFILE).json: a site built in another profile (CI's ci) shows them beside.
site: setup
	$(call execute,$(PROFILE),$(SITE_NB_TIMEOUT))
	cp $(EXECUTED)/claims.json results/claims-$(PROFILE).json
	$(PY) docs/build_site.py html $(EXECUTED) $(SITE)

# The site from the notebooks `make notebooks` already executed (CI: no notebook runs twice).
site-html: setup
	$(PY) docs/build_site.py html $(EXECUTED) $(SITE)

site-test: setup
	FTKIT_PROFILE=ci $(PY) -m pytest tests/test_site.py -q

lock: setup
	{ sed -n '1,2p' constraints.txt; $(PY) -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu/torch==\1/'; } > constraints.new && mv constraints.new constraints.txt

clean-notebooks: setup
	$(PY) -m ftkit sync-notebooks --clear

# How close a training step comes to this machine's matmul rate, per method: python -m ftkit bench (README).
bench: setup
	for p in $(BENCH_PROFILES); do $(PY) -m ftkit bench --profile $$p || exit 1; done

# On a machine with a CUDA GPU (after make setup, or with the packages installed): every notebook on the GPU, the
# memory estimator against CUDA's peaks and the capstone's recipe under a T4's 14.75 GiB, in one call; writes
# results/gpu_check.json (scripts/gpu_check.py). GPU_CHECK_ARGS="--profile t4" runs a T4's code paths on any GPU.
gpu-check:
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) scripts/gpu_check.py $(GPU_CHECK_ARGS)
