"""Test set-up: import the flat top-level modules, quiet TensorFlow, keep CPU threads sane.

Also the helpers several test files share, importable as ``from conftest import ...``:
:data:`ROOT`, :func:`subprocess_env`, :func:`read_jsonl`, :func:`lp_lr`, :func:`tiny_dense_net`,
:func:`tiny_classifier` and :func:`write_cifar`. Keras is imported inside the helpers that need
it, so importing this module loads no TensorFlow.
"""
import json
import os
import pickle
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# As the scripts run (noisy_cv.py, incv_train.py): oneDNN kernels on every x86 CPU.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def subprocess_env(**extra):
    """Environment for a child Python that imports the project's modules (quiet TensorFlow)."""
    return {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def read_jsonl(path):
    """The rows of a JSON-lines file (log.jsonl, incv_log.jsonl), as a list of dicts."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def lp_lr(y_true, y_noisy, selected):
    """Label precision and recall of a selection, recomputed from their definitions.

    LP = |selected and clean| / |selected|, LR = |selected and clean| / |clean|, where a sample
    is clean when its noisy label equals its true label (arXiv:1905.05040, sec. 2).
    """
    y_true, y_noisy = np.asarray(y_true), np.asarray(y_noisy)
    selected = np.asarray(selected, bool)
    clean = y_true == y_noisy
    both = (selected & clean).sum()
    return both / selected.sum(), both / clean.sum()


def tiny_dense_net(n_in, n_out, *, seed=0, hidden=None, name="image"):
    """A softmax network on ``(n_in,)`` inputs with seeded weights: Dense(n_out) or, with
    ``hidden``, Dense(hidden, tanh) -> Dense(n_out). No BatchNorm, so numpy can recompute it."""
    import keras

    rng = np.random.RandomState(seed)
    inp = keras.Input((n_in,), name=name)
    h = inp if hidden is None else keras.layers.Dense(hidden, activation="tanh")(inp)
    net = keras.Model(inp, keras.layers.Dense(n_out, activation="softmax")(h))
    net.set_weights([rng.normal(0, 0.8, w.shape).astype("float32") for w in net.get_weights()])
    return net


def tiny_classifier(*, n_in=3, n_out=2, lr=1e-2, seed=0):
    """Dense softmax classifier compiled as the scripts compile theirs (Adam, sparse CE)."""
    import keras

    from noisylabels import training

    keras.utils.set_random_seed(seed)
    m = keras.Sequential([keras.Input((n_in,)), keras.layers.Dense(n_out, activation="softmax")])
    return training.compile_classifier(m, lr=lr)


def write_cifar(folder, names, key, n_per_file, num_classes, seed=0):
    """Write tiny batches in the official CIFAR python layout (uint8 rows of R, G, B planes).

    Returns ``{file name: (data (n, 3072) uint8, labels list)}``.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(folder)
    written = {}
    for name in names:
        data = rng.integers(0, 256, (n_per_file, 3072), dtype=np.uint8)
        labels = list(rng.integers(0, num_classes, n_per_file))
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({b"data": data, key: labels, b"batch_label": b"x"}, f, protocol=2)
        written[name] = (data, labels)
    return written


# The small digits setting of the end-to-end tests (incv_train.py on 300 images, sym 0.5).
DIGITS_INCV = ["--dataset", "digits", "--arch", "cnn", "--n_train", "300", "--incv_epochs",
               "2", "--incv_iterations", "2", "--epochs", "3", "--noise_pattern", "sym",
               "--noise_ratio", "0.5", "--verbose", "0"]


@pytest.fixture(scope="session")
def digits_all_methods(tmp_path_factory):
    """One costly end-to-end grid shared by the test files that inspect its runs
    (test_incv_train.py, test_selection.py): every method on DIGITS_INCV, made once per
    session. Returns (results_dir, {method: summary})."""
    from noisylabels import incv_train

    results = str(tmp_path_factory.mktemp("digits-all-methods"))
    summaries = incv_train.main(incv_train.parse_args(
        DIGITS_INCV + ["--method", "incv", "cl", "ncv", "coteaching", "standard",
                       "--results_dir", results]))
    return results, {s["method"]: s for s in summaries}


# A grid of 2 settings x 2 seeds x 2 methods (4 units of setting x seed), as small as runs
# get: test_grid.py runs part of it as a task, test_slurm.py all of it as a SLURM array.
GRID = ["--dataset", "digits", "--arch", "cnn", "--n_train", "200", "--incv_epochs", "1",
        "--incv_iterations", "1", "--epochs", "1", "--noise_pattern", "sym", "asym",
        "--noisy_ratio", "0.4", "--seed", "0", "1", "--method", "incv", "ncv", "--verbose", "0"]


@pytest.fixture(scope="session")
def sequential_grid(tmp_path_factory):
    """:data:`GRID` run in one process: the reference of the split and SLURM grids."""
    from noisylabels import incv_train

    results = str(tmp_path_factory.mktemp("sequential"))
    incv_train.main(incv_train.parse_args(GRID + ["--results_dir", results]))
    return results
