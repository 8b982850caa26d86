"""Test set-up: import the flat top-level modules, quiet TensorFlow, keep CPU threads sane."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# As the scripts run (noisy_cv.py, incv_train.py): oneDNN kernels on every x86 CPU.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
