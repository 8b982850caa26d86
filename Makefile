PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test test-backend gpu-wheels gpu-check quick demo cifar10-cpu clean

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
# 3.12, x86-64 Linux) into .whl/, to copy there with the clone. gpu-check: run it (on a machine
# without a GPU it is a dry run). CIFAR: cifar-10-python.tar.gz, a folder holding
# cifar-10-batches-py, or a tarball of train/NNNNN_L.jpg + test/NNNNN_L.jpg.
GPU_WHEELS := keras==3.15.1 namex==0.1.0 optree==0.20.0
gpu-wheels:
	$(PYTHON) -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)
CIFAR ?=
gpu-check:
	$(PYTHON) tests/gpu_check.py $(if $(CIFAR),--cifar $(CIFAR))

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
