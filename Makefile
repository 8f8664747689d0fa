# Two entry points for a fresh machine: `make demo` and `make test`.
# The venv is created once and the project installed once per change of its
# metadata (the stamp file), so repeated calls are fast.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hwprune-installed
DEMO_OUT ?= build/demo
DEMO_ARGS ?=

.PHONY: demo test test-slow gpu-smoke install clean gpu-wheels

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet 'pip>=21.3'  # editable installs of a pyproject project

# --no-compile: pip byte-compiles every file of every package in one process (82 s against
# 50 s without, 2026-12-06). Bytecode is written instead as each module is first imported,
# by whichever process imports it first (Python writes .pyc files atomically), and only for
# what is imported: this VM kind sets PYTHONDONTWRITEBYTECODE, under which nothing ever wrote
# the cache and every test worker and subprocess (torchrun ranks, fresh-process reloads)
# compiled torch again (a clean clone's tests took 261 s against 194 s compiled). Unexported
# here for every recipe; it replaces a compileall of the whole site-packages (22 s). One
# process then imports what every test process imports, so that the two test workers do not
# both compile it at once; a module that fails to import here fails in the tests, by name.
unexport PYTHONDONTWRITEBYTECODE
WARM := hwprune.cli hwprune.api hwprune.demo torch._dynamo torch.export torch.onnx \
        torch.distributed.run torchvision torch_pruning onnx onnxscript onnxruntime openvino \
        timm matplotlib.pyplot sklearn.datasets scipy.stats pyarrow.parquet hypothesis xdist
$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet --no-compile -e '.[test,runtimes,timm,tasks]'
	-$(BIN)/python -c 'import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]' \
	  $(WARM) > /dev/null 2>&1
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/hwprune demo --out $(DEMO_OUT) $(DEMO_ARGS)

# pytest exits 5 when it collects no tests: say so and succeed. Two xdist workers: on this
# 2-core VM kind the suite took 222-234 s against 293 s in one process (2026-11-29; the two
# end-to-end tests, about a minute each, run side by side); TEST_WORKERS=0: one process.
# worksteal: an idle worker takes queued tests from the busy one (tests marked heavy start
# first, tests/conftest.py), so the two finish together.
# OMP_NUM_THREADS=1: the tests run torch on one thread (tests/conftest.py), and so do the
# processes they start (CLI runs in a fresh process, torchrun ranks), which would otherwise
# spin two OpenMP threads each beside the other worker: 199 s against 212 s back to back
# on a clean clone's venv (2026-12-06, one run each; runs of the same tree spread 194-249 s).
TEST_WORKERS ?= 2
test: install
	@OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests"; exit 0; fi; exit $$rc

# What `make test` leaves out to stay within its minutes: the tests marked slow (the larger
# torchvision and timm members, OpenVINO's runtime tables, the full demo, benchmark runs).
test-slow: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m slow $(PYTEST_ARGS)

# Every step of benchmarks/gpu_check.py on the CPU at tiny sizes (about a minute): run it
# before a GPU session, so the device's minutes are not spent on a broken script.
gpu-smoke: install
	$(BIN)/python -m pytest -q -m slow tests/test_gpu_check.py

# Wheels of what the GPU machine (Python 3.12, no network) lacks, for benchmarks/gpu_check.py:
# torch-pruning, and cudnn-frontend for `--algos all` (1.20: later ones require CUTLASS's DSL).
GPU_WHEELS ?= .whl
gpu-wheels:
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
	  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d $(GPU_WHEELS) \
	  torch-pruning==1.6.1 nvidia-cudnn-frontend==1.20.0

clean:
	rm -rf build .pytest_cache
