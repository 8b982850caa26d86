"""Your own data: labels as given (npz), image folders (+ labels file), any transition
matrix, the cleaned set mapped back to the user's samples, the Python API, top-5 accuracy
and the inception_resnet_v2 code path. Small and fast: digits-sized data, 1-2 epochs."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import lp_lr

from noisylabels import data, flags, incv_train, models, noise, noisy_cv, utils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = ["--arch", "cnn", "--verbose", "0"]
INCV_QUICK = QUICK + ["--incv_epochs", "1", "--incv_iterations", "2", "--epochs", "1"]


def _digits():
    xtr, ytr, xte, yte = data._load_digits()
    return (np.rint(xtr * 255).astype(np.uint8), ytr, np.rint(xte * 255).astype(np.uint8), yte)


@pytest.fixture(scope="module")
def npz_files(tmp_path_factory):
    """Digits with given labels: one npz with clean labels beside, one without."""
    folder = tmp_path_factory.mktemp("npz")
    xtr, ytr, xte, yte = _digits()
    y_given = noise.add_noise(ytr, "asym", 0.3, num_classes=10, seed=7)
    with_clean, given_only = str(folder / "mine.npz"), str(folder / "crowd.npz")
    np.savez(with_clean, x_train=xtr, y_train=ytr, y_train_noisy=y_given, x_test=xte,
             y_test=yte)
    np.savez(given_only, x_train=xtr, y_train_noisy=y_given, x_test=xte, y_test=yte)
    return with_clean, given_only, ytr, y_given


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_given_labels_with_clean_labels_are_measured_as_today(npz_files, tmp_path):
    with_clean, _, ytr, y_given = npz_files
    d = data.load_dataset(with_clean)
    assert d.clean_known and np.array_equal(d.y_train, ytr)
    assert np.array_equal(d.y_train_noisy, y_given)
    args = noisy_cv.parse_args(["--dataset", with_clean, "--epochs", "2", "--n_train", "400",
                                "--results_dir", str(tmp_path)] + QUICK)
    (s,) = noisy_cv.main(args)
    out = tmp_path / "mine" / "given" / "seed0"  # no ratio level: the noise is the user's
    assert json.load(open(out / "summary.json"))["pattern"] == "given"
    labels = np.load(out / "labels.npz")
    idx = labels["train_index"]
    # the labels as given, unchanged (no synthetic noise on top), mapped by train_index
    assert np.array_equal(labels["y_noisy"], y_given[idx])
    assert s["actual_noise_ratio"] == pytest.approx(np.mean(ytr[idx] != y_given[idx]))
    assert 0.2 < s["actual_noise_ratio"] < 0.4
    # LP / LR recomputed from the saved held-out predictions and labels
    pred = np.load(out / "predictions.npz")
    held = pred["idx_held"]
    hit = pred["held_out_probs"].argmax(1) == labels["y_noisy"][held]
    lp, lr = lp_lr(labels["y_true"][held], labels["y_noisy"][held], hit)
    assert s["label_precision"] == pytest.approx(lp) and s["label_recall"] == pytest.approx(lr)
    # without a known T the theory uses the empirical one of the clean vs given labels
    from noisylabels import metrics

    assert np.allclose(s["transition_matrix"],
                       metrics.normalized_confusion(ytr[idx], y_given[idx], 10))
    assert s["test_top5_accuracy"] >= s["test_accuracy"]  # 10 classes > 5
    cfg = json.load(open(out / "config.json"))
    assert cfg["run"]["noise_type"] == "sym" and cfg["clean_labels_known"] is True


def test_given_labels_without_clean_labels_report_null_not_fake(npz_files, tmp_path):
    _, given_only, _, y_given = npz_files
    d = data.load_dataset(given_only)
    assert not d.clean_known and d.y_clean is None
    args = noisy_cv.parse_args(["--dataset", given_only, "--epochs", "2", "--n_train", "400",
                                "--results_dir", str(tmp_path)] + QUICK)
    (s,) = noisy_cv.main(args)
    for k in ("label_precision", "label_recall", "actual_noise_ratio", "confusion_matrix",
              "empirical_transition_matrix", "held_out_true_accuracy"):
        assert s[k] is None, k
    out = tmp_path / "crowd" / "given" / "seed0"
    # the measurements that need no clean labels, recomputed from the saved files
    pred, labels = np.load(out / "predictions.npz"), np.load(out / "labels.npz")
    acc = np.mean(pred["held_out_probs"].argmax(1) == labels["y_noisy"][pred["idx_held"]])
    assert s["noisy_accuracy"] == pytest.approx(acc)
    assert s["estimated_noise_ratio"] == pytest.approx(noise.estimate_noise_ratio(acc, 10))
    assert "y_true" not in np.load(out / "labels.npz").files
    saved = json.load(open(out / "summary.json"))
    assert saved["label_precision"] is None and saved["clean_labels_known"] is False

    args = incv_train.parse_args(["--dataset", given_only, "--n_train", "200", "--method",
                                  "incv", "coteaching", "--noise_type", "asym",
                                  "--results_dir", str(tmp_path)] + INCV_QUICK
                                 + ["--epochs", "2"])
    runs = {r["method"]: r for r in incv_train.main(args)}
    r = runs["incv"]
    assert r["noise_type"] == "asym" and r["actual_noise_ratio"] is None
    assert r["selection"]["label_precision"] is None and r["selection"]["selected"] > 0
    assert all(it["removed"] == 0 for it in r["incv"])  # asym rules: no large-loss removal
    assert "label_precision" not in r["incv"][0]
    assert r["estimated_noise_ratio"] is not None and "test_top5_accuracy" in r
    run = tmp_path / "crowd" / "given" / "incv" / "seed0"
    assert json.load(open(run / "config.json"))["run"]["noise_type"] == "asym"
    log = [json.loads(line) for line in open(run / "log.jsonl")]
    # top-5 needs a test pass of its own: made after the last epoch only
    assert "test_top5_accuracy_model1" in log[-1] and "test_top5_accuracy_model2" in log[-1]
    assert len(log) > 1 and not any("top5" in k for row in log[:-1] for k in row)
    assert not any("clean" in k for k in log[0])  # no split against unknown clean labels
    incv_log = [json.loads(line) for line in open(run / "incv_log.jsonl")]
    assert incv_log and not any("clean" in k for row in incv_log for k in row)  # INCV's too
    authors = _read_csv(run / "crowd_given_INCV_results.csv")
    assert {row["y"] for row in authors} == {"-1"}  # unknown, not a copy of y_noisy
    assert runs["coteaching"]["estimated_noise_ratio"] is not None


def test_cleaned_set_maps_back_under_n_train(npz_files, tmp_path):
    """Every row's index is the sample's position in the npz as given, whose given label
    it carries; the subset is a strict one, so an identity index would fail."""
    with_clean, _, ytr, y_given = npz_files
    args = incv_train.parse_args(["--dataset", with_clean, "--n_train", "300", "--incv_only",
                                  "--results_dir", str(tmp_path)] + INCV_QUICK)
    (s,) = incv_train.main(args)
    run = tmp_path / "mine" / "given" / "incv" / "seed0"
    rows = _read_csv(run / "cleaned_set.csv")
    index = np.array([int(r["index"]) for r in rows])
    assert len(rows) == 300 and index.max() >= 300 and len(set(index)) == 300
    assert np.array_equal([int(r["given_label"]) for r in rows], y_given[index])
    assert np.array_equal(np.load(run / "labels.npz")["train_index"], index)
    assert sum(r["status"] == "selected" for r in rows) == s["selection"]["selected"]
    assert s["selection"]["label_precision"] is not None  # clean labels known here
    # reuse of the selection writes the same mapping
    reuse = incv_train.parse_args(["--dataset", with_clean, "--n_train", "300",
                                   "--incv_results", str(run / "mine_given_INCV_results.csv"),
                                   "--results_dir", str(tmp_path / "reuse")] + INCV_QUICK)
    incv_train.main(reuse)
    again = _read_csv(tmp_path / "reuse" / "mine" / "given" / "incv" / "seed0" /
                      "cleaned_set.csv")
    assert [(r["index"], r["status"]) for r in again] == [(r["index"], r["status"])
                                                          for r in rows]


# ------------------------------------------------------------------------- image folders
CLASSES = ("cat", "dog", "frog")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """3 classes x 10 train / 4 test images of mixed sizes and formats; the class is the
    dominant colour channel, so a network can learn it."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imgs") / "pets"
    rng = np.random.default_rng(0)
    for part, n in (("train", 10), ("test", 4)):
        for k, name in enumerate(CLASSES):
            os.makedirs(root / part / name)
            for i in range(n):
                h, w = rng.integers(12, 30, size=2)
                img = rng.integers(0, 80, size=(h, w, 3), dtype=np.uint8)
                img[..., k] += 150
                ext = "png" if i % 2 else "jpg"
                Image.fromarray(img).save(root / part / name / f"{i:03d}.{ext}")
    return str(root)


def test_image_folder_loads_with_class_names_and_paths(image_folder):
    d = data.load_image_folder(image_folder, image_size=16)
    assert d.name == "pets" and d.class_names == list(CLASSES) and d.num_classes == 3
    assert d.x_train.shape == (30, 16, 16, 3) and d.x_test.shape == (12, 16, 16, 3)
    assert d.x_train.dtype == np.float32 and 0 <= d.x_train.min() and d.x_train.max() <= 1
    assert np.array_equal(np.rint(d.x_train * 255) / 255, d.x_train)  # uint8 / 255 as CIFAR
    assert d.train_paths[0] == "cat/000.jpg" and d.y_train_noisy is None and d.clean_known
    # the folder's label is its class (dominant channel)
    assert np.array_equal(d.x_train.mean((1, 2)).argmax(1), d.y_train)
    assert all(p.split("/")[0] == CLASSES[y] for p, y in zip(d.train_paths, d.y_train))
    web = data.load_image_folder(image_folder, image_size=8, folder_labels="given")
    assert not web.clean_known and web.y_clean is None  # web labels: no clean labels
    assert np.array_equal(web.y_train_noisy, d.y_train)


def test_image_folder_with_labels_file_end_to_end(image_folder, tmp_path):
    d = data.load_image_folder(image_folder, image_size=16)
    given = d.y_train.copy()
    given[[0, 11, 25]] = [1, 2, 0]  # three labels differ from their folders
    labels = tmp_path / "labels.csv"
    with open(labels, "w") as f:
        f.write("path,label\n")
        for i, (p, y) in enumerate(zip(d.train_paths, given)):
            f.write(f"{p},{CLASSES[y] if i % 2 else y}\n")  # names and indices both work
    d2 = data.load_image_folder(image_folder, image_size=16, labels=str(labels))
    assert np.array_equal(d2.y_train_noisy, given) and np.array_equal(d2.y_train, d.y_train)

    args = incv_train.parse_args(["--dataset", image_folder, "--labels", str(labels),
                                  "--image_size", "16", "--incv_only", "--batch_size", "8",
                                  "--results_dir", str(tmp_path)] + INCV_QUICK)
    (s,) = incv_train.main(args)
    run = tmp_path / "pets" / "given" / "incv" / "seed0"
    assert s["actual_noise_ratio"] == pytest.approx(3 / 30)
    assert s["class_names"] == list(CLASSES)
    assert json.load(open(run / "classes.json")) == list(CLASSES)
    rows = _read_csv(run / "cleaned_set.csv")
    assert list(rows[0]) == ["index", "path", "given_label", "given_class", "status",
                             "heldout_loss"]
    for r in rows:
        assert r["path"] == d.train_paths[int(r["index"])]
        assert r["given_class"] == CLASSES[given[int(r["index"])]]


def test_image_folder_without_labels_file_takes_synthetic_noise(image_folder, tmp_path):
    args = noisy_cv.parse_args(["--dataset", image_folder, "--image_size", "12", "--epochs",
                                "1", "--batch_size", "8", "--noise_pattern", "sym",
                                "--noise_ratio", "0.2", "--results_dir", str(tmp_path)]
                               + QUICK)
    (s,) = noisy_cv.main(args)
    assert s["label_precision"] is not None and "test_top5_accuracy" not in s  # 3 classes
    out = tmp_path / "pets" / "sym" / "0.2" / "seed0"
    assert json.load(open(out / "config.json"))["class_names"] == list(CLASSES)


@pytest.mark.parametrize("break_it, message", [
    (lambda root: os.rename(root / "test", root / "val"), "expected the folder"),
    (lambda root: os.rename(root / "train" / "dog" / "001.png", root / "train" / "x.png"),
     "images directly in it"),
    (lambda root: [os.remove(root / "test" / "frog" / f)
                   for f in os.listdir(root / "test" / "frog")], "holds no image"),
])
def test_image_folder_bad_layout_names_the_folder(image_folder, tmp_path, break_it, message):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(image_folder, root)
    break_it(root)
    with pytest.raises(ValueError, match=message) as err:
        data.load_image_folder(str(root), image_size=8)
    assert str(root) in str(err.value)


def test_labels_file_errors_name_file_and_line(image_folder, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\ncat/000.jpg,cat\ncat/nope.jpg,dog\n")
    with pytest.raises(ValueError, match=r"bad.csv' line 3: 'cat/nope.jpg'"):
        data.load_image_folder(image_folder, image_size=8, labels=str(bad))
    bad.write_text("path,label\ncat/000.jpg,horse\n")
    with pytest.raises(ValueError, match="label 'horse' is neither"):
        data.load_image_folder(image_folder, image_size=8, labels=str(bad))
    bad.write_text("path,label\ncat/000.jpg,cat\n")
    with pytest.raises(ValueError, match="29 training images have no row"):
        data.load_image_folder(image_folder, image_size=8, labels=str(bad))


# ------------------------------------------------------------------ any transition matrix
T3 = np.array([[0.6, 0.3, 0.1], [0.0, 0.9, 0.1], [0.25, 0.25, 0.5]])


def test_custom_T_sampling_matches_T_and_the_closed_forms():
    rng = np.random.default_rng(0)
    prior = np.array([0.5, 0.3, 0.2])
    y = rng.choice(3, size=300_000, p=prior)
    y_noisy = noise.add_noise_from_transition(y, T3, seed=1)
    assert np.array_equal(y_noisy, noise.add_noise_from_transition(y, T3, seed=1))  # seeded
    from noisylabels import metrics

    assert np.allclose(metrics.normalized_confusion(y, y_noisy, 3), T3, atol=0.005)
    # a network that reproduces the noise on held-out data predicts pred ~ T[y] as well
    pred = noise.add_noise_from_transition(y, T3, seed=2)
    sel = pred == y_noisy
    m = metrics.selection_metrics(y, y_noisy, sel)
    assert sel.mean() == pytest.approx(noise.expected_accuracy(T3, prior), abs=0.005)
    assert m["label_precision"] == pytest.approx(
        noise.expected_label_precision(T3, prior), abs=0.005)
    assert m["label_recall"] == pytest.approx(noise.expected_label_recall(T3, prior), abs=0.005)


def test_existing_sym_asym_draws_unchanged():
    """The T-based path is separate: add_noise's sym/asym draws are as before."""
    y = np.arange(1000) % 10
    rng = np.random.default_rng(3)
    flip, offset = rng.random(1000) < 0.4, rng.integers(1, 10, size=1000)
    assert np.array_equal(noise.add_noise(y, "sym", 0.4, num_classes=10, seed=3),
                          np.where(flip, (y + offset) % 10, y))


def test_transition_matrix_run_is_filed_under_the_file_and_compared(tmp_path):
    T = np.full((10, 10), 0.02)
    np.fill_diagonal(T, 0.82)
    path = tmp_path / "near_sym.csv"
    np.savetxt(path, T, delimiter=",")
    args = noisy_cv.parse_args(["--dataset", "digits", "--transition_matrix", str(path),
                                "--epochs", "1", "--n_train", "300",
                                "--results_dir", str(tmp_path)] + QUICK)
    (s,) = noisy_cv.main(args)
    assert s["pattern"] == "T-near_sym" and s["ratio"] is None
    assert np.allclose(s["transition_matrix"], T)
    labels = np.load(tmp_path / "digits" / "T-near_sym" / "seed0" / "labels.npz")
    prior = np.bincount(labels["y_true"][labels["idx_held"]], minlength=10)
    assert s["theory"]["accuracy"] == pytest.approx(noise.expected_accuracy(T, prior))
    assert s["theory"]["label_precision"] == pytest.approx(
        noise.expected_label_precision(T, prior))
    assert os.path.isfile(tmp_path / "digits" / "T-near_sym" / "seed0" / "confusion.png")


@pytest.mark.parametrize("content, message", [
    ("0.5,0.5\n0.3,0.6\n", "row 1 sums to 0.9"),
    ("0.5,0.5\n-0.1,1.1\n", "row 1 has a negative"),
    ("0.5,0.5,0\n0.5,0.5,0\n", "square"),
    ("a,b\n", "cannot read"),
])
def test_bad_transition_matrix_file_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "T.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        noise.load_transition_matrix(str(path))
    assert str(path) in str(err.value)


def test_bad_transition_matrix_via_the_script_exits_2_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "T.npy"
    np.save(bad, np.eye(3))  # digits has 10 classes
    out = tmp_path / "results"
    args = noisy_cv.parse_args(["--dataset", "digits", "--transition_matrix", str(bad),
                                "--results_dir", str(out), "--epochs", "1"])
    assert utils.cli(noisy_cv.main, args) == 2
    err = capsys.readouterr().err
    assert f"error: --transition_matrix '{bad}': is 3 x 3 but the dataset has 10" in err
    assert not out.exists()


# ------------------------------------------------------------------------- the Python API
def test_python_api_on_a_tiny_model():
    import keras

    from noisylabels import incv

    xtr, ytr, _, _ = _digits()
    x, y = xtr[:240], ytr[:240]
    y_noisy = noise.add_noise(y, "sym", 0.3, num_classes=10, seed=0)

    def tiny(input_shape, num_classes):
        return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                                 keras.layers.Dense(32, activation="relu"),
                                 keras.layers.Dense(num_classes, activation="softmax")])

    out = incv.clean_labels(x, y_noisy, build_model=tiny, epochs=3, batch_size=32,
                            iterations=2, y_true=y)
    parts = np.concatenate([out["selected"], out["candidate"], out["removed"]])
    assert np.array_equal(np.sort(parts), np.arange(240))  # a partition of the samples
    assert len(out["selected"]) > 0 and len(out["iterations"]) == 2
    assert (out["status"][out["selected"]] == "selected").all()
    assert np.isfinite(out["heldout_loss"]).all()  # iteration 1 predicts everyone
    assert 0 <= out["estimated_noise_ratio"] <= 0.9
    assert "label_precision" in out["iterations"][0]
    with pytest.raises(ValueError, match="noise_type"):
        incv.clean_labels(x, y_noisy, build_model=tiny, noise_type="pairflip")


def test_importing_the_api_sets_nothing_beyond_tensorflow_itself():
    """``import incv`` must not set the scripts' TensorFlow settings (TF_CPP_MIN_LOG_LEVEL,
    TF_ENABLE_ONEDNN_OPTS: utils.load_tensorflow, called by the scripts only) nor anything
    else beyond the variables TensorFlow's own import sets (imported first, as the baseline)."""
    # (TensorFlow's import may set TF_CPP_MIN_LOG_LEVEL itself where JAX is installed: it
    # imports JAX, which sets it to 1; so the check is what changes after the baseline.)
    probe = ("import json, os, sys; sys.path.insert(0, {root!r}); import keras; "
             "before = dict(os.environ); from noisylabels import incv; "
             "print(json.dumps(sorted(k for k in set(os.environ) | set(before) "
             "if before.get(k) != os.environ.get(k))))").format(root=ROOT)
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []


# ---------------------------------------------------------- the mini-WebVision network
def test_arch_list_and_inception_resnet_v2_code_path(tmp_path, capsys):
    assert flags.ARCHS == models.MODEL_NAMES
    with pytest.raises(ValueError, match="--image_size 75 or more"):
        models.build_model("inception_resnet_v2", (32, 32, 3), 50)
    args = incv_train.parse_args(["--dataset", "digits", "--arch", "inception_resnet_v2",
                                  "--results_dir", str(tmp_path)])
    assert utils.cli(incv_train.main, args) == 2 and not os.listdir(tmp_path)
    assert "--image_size 75 or more" in capsys.readouterr().err
    net = models.build_model("inception_resnet_v2", (75, 75, 3), 50)
    probs = net.predict(np.random.default_rng(0).random((2, 75, 75, 3), np.float32),
                        verbose=0)
    assert probs.shape == (2, 50) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_python_api_runs_the_modified_coteaching_without_flags(tmp_path):
    """Co-teaching from Python: a Data, a selection, the plan from e, no command line."""
    import noisylabels
    from noisylabels import CoTeachingConfig, Data, coteaching_plan, train_two_networks

    rng = np.random.default_rng(0)
    n, c = 60, 3
    x = rng.random((n, 8, 8, 1)).astype("float32")
    y = np.arange(n) % c
    y_noisy = np.where(np.arange(n) % 5 == 0, (y + 1) % c, y)
    data = Data("arrays", x, y, x[:12], y[:12], c)
    plan = coteaching_plan(0.2, noise_type="sym", num_classes=c, epochs=4)
    assert plan == {"forget_rate": noise.expected_noise_of_selected(0.2, "sym", c),
                    "warmup": 1}  # 40 of 200 epochs scaled to 4: round(0.8)
    s_idx, c_idx = np.arange(40), np.arange(40, n)
    rows = train_two_networks(CoTeachingConfig(arch="cnn", epochs=4, batch_size=16,
                                               verbose=0), data, y_noisy, s_idx, c_idx,
                              seed=0, out=str(tmp_path), printer=lambda *a: None, **plan)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows == [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    # the last epoch's mean keep count per step, recomputed: S batches of 16, 16, 8 (each
    # joined by C samples after the warm-up), keep = round(b_S (1 - r)) at the ramp's top
    from noisylabels import coteaching

    r = coteaching.forget_rate_at(3, forget_rate=plan["forget_rate"], tk=10.0, epochs=4)
    assert rows[-1]["keep"] == pytest.approx(np.mean([round(b * (1 - r)) for b in (16, 16, 8)]))
    assert "test_accuracy_model2" in rows[-1]
    assert noisylabels.INCVConfig().epochs == 50 and CoTeachingConfig().epochs == 200
