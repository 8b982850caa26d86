"""Every Keras backend: --backend, the pinning checks of tests/backend_cases.py on JAX and
PyTorch (each in its own process: Keras picks its backend once per process), one end-to-end
run of each script per backend without TensorFlow imported, and the refusals."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, subprocess_env

OTHER_BACKENDS = [pytest.param(b, marks=pytest.mark.skipif(
    importlib.util.find_spec(b) is None, reason=f"{b} is not installed"))
    for b in ("jax", "torch")]


def _child_env(backend):
    env = subprocess_env(KERAS_BACKEND=backend)
    env.pop("NOISY_LABELS_DEBUG", None)
    return env


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_pinning_cases_pass_on_backend(backend):
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         os.path.join(ROOT, "tests", "backend_cases.py")],
        cwd=ROOT, env=_child_env(backend), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


# Both scripts end to end in one child, then: TensorFlow never imported.
_E2E = """
import json, sys
from noisylabels import incv_train, noisy_cv
out = sys.argv[1]
common = ["--dataset", "digits", "--arch", "cnn", "--n_train", "200", "--verbose", "0",
          "--results_dir", out, "--backend", sys.argv[2]]
noisy_cv.main(noisy_cv.parse_args(common + ["--epochs", "1", "--noisy_ratio", "0.4"]))
incv_train.main(incv_train.parse_args(common + [
    "--incv_epochs", "1", "--incv_iterations", "1", "--epochs", "2", "--noisy_ratio", "0.5",
    "--method", "incv", "cl", "ncv", "coteaching", "standard", "fcorrection", "decoupling",
    "mentornet", "d2l", "--augment", "standard"]))
print(json.dumps({"tensorflow_imported": "tensorflow" in sys.modules}))
"""


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_both_scripts_run_end_to_end_without_tensorflow(backend, tmp_path):
    env = _child_env(backend)
    env.pop("KERAS_BACKEND")  # the flag alone chooses the backend
    proc = subprocess.run([sys.executable, "-c", _E2E, str(tmp_path), backend], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"tensorflow_imported": False}
    summaries = list(tmp_path.rglob("summary.json"))
    # noisy_cv + incv, cl, ncv, coteaching, standard + Table 1's other four
    assert len(summaries) == 10
    for method in ("fcorrection", "decoupling", "mentornet", "d2l"):
        summary = json.loads(next(p for p in summaries
                                  if f"/{method}/" in str(p)).read_text())
        assert summary["backend"] == backend and summary["method"] == method
        assert 0.0 <= summary["test_accuracy"]["model1"] <= 1.0
    for path in summaries:
        assert json.loads(path.read_text())["backend"] == backend
        config = json.loads((path.parent / "config.json").read_text())
        assert config["versions"]["backend"] == backend
        assert config["args"]["backend"] == backend
        assert "tensorflow" not in config["versions"]
    rows = [json.loads(line) for line in
            (tmp_path / "digits/sym/0.5/coteaching/seed0/log.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(np.isfinite(r["loss1"]) for r in rows)


def _run_script(script, args, **env):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT,
                          env=subprocess_env(**env), capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("args,message", [
    (["--backend", "jax", "--devices", "all"], "error: --devices all is tf.distribute"),
    (["--backend", "torch", "--selection", "authors"],
     "error: --selection authors is available on --backend tensorflow only"),
    (["--backend", "mxnet"], "invalid choice: 'mxnet'"),
])
def test_what_a_backend_cannot_run_is_refused_in_one_line(args, message, tmp_path):
    if "jax" in args and importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    if "torch" in args and importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    proc = _run_script("incv_train.py", ["--dataset", "digits", "--results_dir",
                                         str(tmp_path / "r"), *args])
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not (tmp_path / "r").exists()


def test_unknown_keras_backend_env_is_a_one_line_error(tmp_path):
    proc = _run_script("noisy_cv.py", ["--dataset", "digits", "--results_dir",
                                       str(tmp_path / "r")], KERAS_BACKEND="mxnet")
    assert proc.returncode == 2
    assert "error: KERAS_BACKEND 'mxnet' is not a Keras backend" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_missing_backend_package_names_what_to_install(monkeypatch):
    from noisylabels import flags, incv_train

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "jax" else real(name, *a))
    with pytest.raises(SystemExit) as exc:
        incv_train.parse_args(["--backend", "jax", "--dataset", "digits"])
    assert exc.value.code == 2
    assert flags.utils.BACKEND_PACKAGES["jax"][1] == "jax==0.10.2 jaxlib==0.10.2"


def test_load_backend_refuses_a_second_backend_in_one_process():
    import keras

    from noisylabels import utils

    assert utils.load_backend(None) is keras  # this process: TensorFlow (the default)
    other = "jax" if keras.backend.backend() != "jax" else "torch"
    with pytest.raises(ValueError, match="already loaded in this process"):
        utils.load_backend(other)


def test_rank_mask_picks_what_top_k_picks_on_tensorflow():
    import tensorflow as tf

    from noisylabels.backend_steps import small_loss_mask

    rng = np.random.default_rng(0)
    for trial in range(20):
        loss = rng.integers(0, 5, 24).astype(np.float32)  # many ties
        keep = int(rng.integers(0, 25))
        mask = np.asarray(small_loss_mask(tf.constant(loss), keep))
        _, picks = tf.math.top_k(-tf.constant(loss), k=keep)
        want = np.zeros(24, bool)
        want[picks.numpy()] = True
        assert (mask == want).all(), (trial, loss, keep)


def test_numpy_pipeline_on_tensorflow_keeps_the_rules(tmp_path):
    """The numpy pipeline, chosen explicitly on TensorFlow (tests/benchmark.py compares
    it with tf.data): the S + C batch rule of make_coteaching_dataset."""
    from noisylabels import pipelines

    x = np.random.default_rng(0).random((50, 4, 4, 1), dtype=np.float32)
    y = np.arange(50) % 3
    ds = pipelines.make_coteaching_dataset(x, y, np.ones(50, bool), np.arange(35),
                                           np.arange(35, 50), batch_size=8, c_batch_size=4,
                                           seed=1, pipeline="numpy")
    assert len(ds) == 5
    seen_s = []
    for i in range(len(ds)):
        inputs, labels = ds[i]
        n_s = int(inputs["from_s"].sum())
        assert (inputs["from_s"][:n_s] == 1).all() and (inputs["from_s"][n_s:] == 0).all()
        assert len(labels) - n_s == 4
        seen_s.extend(labels[:n_s])
    assert len(seen_s) == 35  # one pass over S
