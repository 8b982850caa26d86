PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test test-backend gpu-wheels gpu-check gpu-check-sim quick demo cifar10-cpu clean

setup: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# The method-pinning checks (tests/backend_cases.py) on one Keras backend; `make test` runs
# them on jax and torch as well (tests/test_backends.py), each in its own process.
BACKEND ?= jax
test-backend: $(STAMP)
	KERAS_BACKEND=$(BACKEND) $(PY) -m pytest -q tests/backend_cases.py

# The GPU check (tests/gpu_check.py, docs/backends.md "A GPU"). gpu-wheels: where pip reaches
# a package index, the wheels a GPU machine with JAX / PyTorch but no Keras lacks (CPython
# $(GPU_PY), x86-64 Linux) into $(WHEEL_DIR)/, to copy there with the clone: Keras's own
# requirements are absl-py, numpy, rich, namex, h5py, optree, ml-dtypes and packaging, optree's
# typing-extensions; the GPU machine's image holds all of them but namex and optree.
# gpu-check: run it (on a machine without a GPU it is a dry run); it writes gpu_check.json and
# gpu_check.md into OUT after every stage. CIFAR: cifar-10-python.tar.gz, a folder holding
# cifar-10-batches-py, or a tarball of train/NNNNN_L.jpg + test/NNNNN_L.jpg.
# gpu-check-sim: the whole GPU procedure on this CPU in a fresh venv holding only the GPU
# image's packages (tests/gpu_check_sim.sh; 3-6 minutes, needs a package index; not in `make
# test`). SIM_PYTHON: the venv's interpreter (the GPU machine's is 3.12); SIM_DIR: where
# (default build/gpu-check-sim, replaced on each run).
GPU_WHEELS := keras==3.15.1 namex==0.1.0 optree==0.20.0
GPU_PY ?= 3.12
WHEEL_DIR ?= .whl
gpu-wheels:
	$(PYTHON) -m pip download --no-deps --only-binary=:all: --python-version $(GPU_PY) \
		--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d $(WHEEL_DIR) \
		$(GPU_WHEELS)
CIFAR ?=
OUT ?= results/gpu_check
gpu-check:
	$(PYTHON) tests/gpu_check.py $(if $(CIFAR),--cifar $(CIFAR)) --out $(OUT)
SIM_PYTHON ?= python3
gpu-check-sim:
	PYTHON=$(SIM_PYTHON) tests/gpu_check_sim.sh

# The whole idea in under a minute of computing on 2 CPU cores, on scikit-learn's bundled
# digits with 40% symmetric noise (the same noisy labels in both commands, from --seed 0):
# noisy cross-validation's held-out accuracy, LP and LR beside the theory, then INCV's
# selection (LP / LR of the selected set) and the cleaned_set.csv it writes.
QUICK_DIR := results/quick-$(shell date +%Y%m%d-%H%M%S)
quick: $(STAMP)
	$(PY) noisy_cv.py --dataset digits --arch cnn --epochs 40 --noise_pattern sym \
		--noisy_ratio 0.4 --results_dir $(QUICK_DIR) --verbose 0
	$(PY) incv_train.py --dataset digits --arch cnn --incv_epochs 10 --incv_iterations 2 \
		--noise_pattern sym --noisy_ratio 0.4 --incv_only --results_dir $(QUICK_DIR) \
		--verbose 0
	@echo "quick results in $(QUICK_DIR)"

# A few minutes on 2 CPU cores, on scikit-learn's bundled digits; each call writes a new
# results/demo-<time>/ so an earlier demo is never overwritten.
DEMO_DIR := results/demo-$(shell date +%Y%m%d-%H%M%S)
demo: $(STAMP)
	$(PY) noisy_cv.py --dataset digits --arch cnn --epochs 60 --noise_pattern sym asym \
		--noisy_ratio 0.4 --results_dir $(DEMO_DIR) --verbose 0
	$(PY) incv_train.py --dataset digits --arch cnn --incv_epochs 10 --epochs 30 \
		--noise_pattern sym --noisy_ratio 0.5 --method incv standard \
		--results_dir $(DEMO_DIR) --verbose 0
	@echo "demo results in $(DEMO_DIR)"

# The paper's three findings on CIFAR-10 at CPU scale (hours; resumable: run it again to
# continue). DATA_DIR: the folder holding cifar-10-batches-py. See reproduce_cifar10_cpu.sh.
DATA_DIR ?= data
cifar10-cpu: $(STAMP)
	PYTHON=$(PY) DATA_DIR=$(DATA_DIR) ./reproduce_cifar10_cpu.sh all

clean:
	rm -rf $(VENV) .pytest_cache
