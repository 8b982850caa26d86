PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test demo bench clean

setup: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) noisy_cv.py --dataset digits --arch cnn --epochs 30 --noise_pattern sym --noisy_ratio 0.0 0.2 0.5 0.8 --results_dir results/demo --overwrite

clean:
	rm -rf $(VENV) .pytest_cache
