"""noisy_cv.py end to end on digits, and its handling of bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, lp_lr, read_jsonl, subprocess_env

from noisylabels import data, noise, noisy_cv, utils


def _run_cli(*argv):
    env = subprocess_env()
    return subprocess.run([sys.executable, os.path.join(ROOT, "noisy_cv.py"), *argv],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    results = str(tmp_path_factory.mktemp("results"))
    args = noisy_cv.parse_args(["--dataset", "digits", "--arch", "cnn", "--epochs", "3",
                                "--noise_pattern", "sym", "asym", "--noise_ratio", "0.4",
                                "--n_train", "400", "--results_dir", results,
                                "--verbose", "0"])
    points = noisy_cv.main(args)
    return results, points


def test_summary_agrees_with_saved_labels_and_predictions(finished):
    results, points = finished
    assert len(points) == 2
    for pattern in ("sym", "asym"):
        out = os.path.join(results, "digits", pattern, "0.4", "seed0")
        for name in ("config.json", "labels.npz", "predictions.npz", "log.jsonl",
                     "summary.json", "confusion.png"):
            assert os.path.isfile(os.path.join(out, name)), name
        s = json.load(open(os.path.join(out, "summary.json")))
        lab, pred = np.load(os.path.join(out, "labels.npz")), np.load(
            os.path.join(out, "predictions.npz"))
        held = lab["idx_held"]
        assert np.array_equal(held, pred["idx_held"])
        assert sorted(np.concatenate([lab["idx_fit"], held])) == list(range(400))
        yt, yn, p = lab["y_true"][held], lab["y_noisy"][held], pred["held_out_probs"].argmax(1)
        hit = p == yn
        assert s["noisy_accuracy"] == pytest.approx(hit.mean())
        assert (s["label_precision"], s["label_recall"]) == pytest.approx(lp_lr(yt, yn, hit))
        assert s["actual_noise_ratio"] == pytest.approx((lab["y_true"] != lab["y_noisy"]).mean())
        assert 0.3 < s["actual_noise_ratio"] < 0.5
        test_y = data.load_dataset("digits").y_test
        assert s["test_accuracy"] == pytest.approx((pred["test_probs"].argmax(1) == test_y).mean())
        cm = np.array(s["confusion_matrix"])
        assert cm.shape == (10, 10) and np.allclose(cm.sum(1), 1)
        T = noise.transition_matrix(pattern, 0.4, 10)
        assert np.allclose(s["transition_matrix"], T)
        prior = np.bincount(yt, minlength=10)
        assert s["theory"]["accuracy"] == pytest.approx(noise.expected_accuracy(T, prior))
        assert s["theory"]["label_recall"] == pytest.approx(0.6)
        log = read_jsonl(os.path.join(out, "log.jsonl"))
        assert [r["epoch"] for r in log] == [1, 2, 3]
        assert {"val_noisy_accuracy", "val_acc_clean_labels", "loss", "lr"} <= set(log[0])
        cfg = json.load(open(os.path.join(out, "config.json")))
        assert cfg["args"]["epochs"] == 3 and cfg["run"]["pattern"] == pattern
    assert os.path.isfile(os.path.join(results, "digits", "noisy_cv_cnn.png"))


def test_same_seed_same_noise_and_split(finished, tmp_path):
    results, _ = finished
    args = noisy_cv.parse_args(["--dataset", "digits", "--arch", "cnn", "--epochs", "1",
                                "--noise_pattern", "sym", "--noise_ratio", "0.4",
                                "--n_train", "400", "--results_dir", str(tmp_path),
                                "--verbose", "0"])
    noisy_cv.main(args)
    a = np.load(os.path.join(results, "digits", "sym", "0.4", "seed0", "labels.npz"))
    b = np.load(os.path.join(tmp_path, "digits", "sym", "0.4", "seed0", "labels.npz"))
    for k in ("y_true", "y_noisy", "idx_fit", "idx_held"):
        assert np.array_equal(a[k], b[k]), k


def test_existing_run_is_refused_then_skipped(finished):
    results, _ = finished
    argv = ["--dataset", "digits", "--arch", "cnn", "--epochs", "1", "--noise_pattern", "sym",
            "--noise_ratio", "0.4", "--n_train", "400", "--results_dir", results]
    before = open(os.path.join(results, "digits", "sym", "0.4", "seed0", "summary.json")).read()
    r = _run_cli(*argv)
    assert r.returncode == 2 and "already holds an earlier run" in r.stderr
    assert "--overwrite" in r.stderr
    r = _run_cli(*argv, "--skip_existing")
    assert r.returncode == 0 and "skip (finished earlier)" in r.stdout
    after = open(os.path.join(results, "digits", "sym", "0.4", "seed0", "summary.json")).read()
    assert before == after


@pytest.mark.parametrize("argv, message", [
    (["--noisy_ratio", "1.5"], "--noisy_ratio must be in [0, 1], got 1.5"),
    (["--noise_pattern", "pairflip"], "invalid choice: 'pairflip'"),
    (["--epochs", "0"], "--epochs must be a positive integer"),
])
def test_bad_flags_exit_with_usage(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        noisy_cv.parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "cifar10", "--data_dir", "/nonexistent/data", "--no_download"],
     "expected the official python-version files in '/nonexistent/data/cifar-10-batches-py'"),
    (["--dataset", "/nonexistent/mine.npz"], "--dataset file '/nonexistent/mine.npz'"),
])
def test_missing_data_is_a_clear_error(argv, message, tmp_path, capsys):
    args = noisy_cv.parse_args([*argv, "--results_dir", str(tmp_path), "--epochs", "1"])
    assert utils.cli(noisy_cv.main, args) == 2
    assert message in capsys.readouterr().err
    assert os.listdir(tmp_path) == []  # nothing written
