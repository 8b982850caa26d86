"""Selectors and noise estimates on scripted out-of-sample probabilities (selection.py),
the out-of-sample property of INCV's / the 2-fold round's / noisy_cv's probabilities, and
``incv_train.py --method cl / ncv`` writing the files INCV writes."""

import csv
import json
import os

import numpy as np
import pytest

from noisylabels import incv, noise, selection

C = 10


def _scripted(n=2000, ratio=0.4, pattern="sym", seed=0):
    """Labels with known noise and probabilities whose answer is known: 0.9 on the true
    class for every sample, so a clean sample's prediction equals its label and a
    mislabelled one's is its label's competitor (the true class)."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, C, n)
    y_noisy = noise.add_noise(y_true, pattern, ratio, num_classes=C, seed=seed + 1)
    probs = np.full((n, C), 0.1 / (C - 1))
    probs[np.arange(n), y_true] = 0.9
    return y_true, y_noisy, probs


@pytest.mark.parametrize("pattern, ratio", [("sym", 0.4), ("asym", 0.3)])
def test_selectors_find_exactly_the_mislabelled_samples(pattern, ratio):
    y_true, y_noisy, probs = _scripted(pattern=pattern, ratio=ratio)
    clean = y_true == y_noisy
    for name, select in selection.SELECTORS.items():
        st = select(probs, y_noisy, num_classes=C)
        assert np.array_equal(st["selected"], clean), name
        assert np.array_equal(st["candidate"], ~clean), name
    ncv = selection.select_ncv(probs, y_noisy, num_classes=C)
    assert ncv["eval_ratio"] == pytest.approx(noise.estimate_noise_ratio(clean.mean(), C))
    cl = selection.select_cl(probs, y_noisy, num_classes=C)
    # confident learning counts every sample into (given, true): its estimate is exact
    assert cl["eval_ratio"] == pytest.approx(1 - clean.mean(), abs=1 / len(clean))
    est = selection.noise_estimates(probs, y_noisy, num_classes=C, y_true=y_true)
    assert est["actual"] == pytest.approx(1 - clean.mean())
    np.testing.assert_allclose(est["cl_noise_matrix"], est["empirical_T"], atol=1e-9)
    assert est["cl_noise_matrix_to_T_mad"] == pytest.approx(0, abs=1e-9)
    # M (prediction vs. true) is the identity here, so its distance to T is T's off-diagonal
    np.testing.assert_allclose(est["confusion"], np.eye(C))
    T = est["empirical_T"]
    assert est["confusion_to_T_fro"] == pytest.approx(np.linalg.norm(T - np.eye(C)))
    assert est["held_out_formula"] == pytest.approx(ncv["eval_ratio"])


def test_cl_estimate_and_matrix_use_the_paper_convention():
    """Rows of the CL matrix are true classes (P(noisy = j | true = i)), as T: asym pair
    flips put the mass at (i, i+1), not (i+1, i)."""
    y_true, y_noisy, probs = _scripted(ratio=0.3, pattern="asym", seed=3)
    m = selection.select_cl(probs, y_noisy, num_classes=C)["noise_matrix"]
    i = np.arange(C)
    assert (m[i, (i + 1) % C] > 0.2).all() and (m[(i + 1) % C, i] < 0.05).all()


def test_ncv_on_uninformative_probabilities():
    rng = np.random.default_rng(0)
    y = rng.integers(0, C, 500)
    probs = rng.dirichlet(np.ones(C), 500)
    st = selection.select_ncv(probs, y, num_classes=C)
    assert np.array_equal(st["selected"], probs.argmax(1) == y)
    assert st["eval_ratio"] > 0.8  # ~ chance accuracy: the formula's cap (c-1)/c = 0.9


def test_bad_probabilities_are_refused():
    y = np.zeros(4, int)
    with pytest.raises(ValueError, match="shape"):
        selection.select_ncv(np.ones((4, 3)) / 3, y, num_classes=C)
    probs = np.full((4, C), 0.1)
    probs[1] = np.nan
    with pytest.raises(ValueError, match="train both folds"):
        selection.select_cl(probs, y, num_classes=C)


class RecordingTraining:
    """A train_fn that records what each run trained on and marks its predictions with
    the run's number (column 0 holds run / 100)."""

    def __init__(self, y_noisy):
        self.y, self.calls = y_noisy, []

    def __call__(self, train_idx, held_idx, keep_best, tag):
        self.calls.append((set(train_idx.tolist()), set(held_idx.tolist())))
        probs = np.full((len(held_idx), C), 0.5 / (C - 1))
        probs[np.arange(len(held_idx)), self.y[held_idx]] = 0.5  # some agree, loss finite
        probs[:, 0] = len(self.calls) / 100
        return probs


def _check_out_of_sample(oos, calls):
    run = np.rint(oos[:, 0] * 100).astype(int)
    assert (run >= 1).all()
    for i, k in enumerate(run):
        trained, held = calls[k - 1]
        assert i in held and i not in trained


def test_incv_probabilities_are_out_of_sample():
    rng = np.random.default_rng(1)
    y = rng.integers(0, C, 301)
    train = RecordingTraining(y)
    st = incv.incv_select(y, num_classes=C, pattern="sym", seed=2, iterations=3,
                          train_fn=train)
    assert len(train.calls) == 6  # later iterations must not overwrite iteration 1's rows
    _check_out_of_sample(st["oos_probs"], train.calls)
    assert set(np.rint(st["oos_probs"][:, 0] * 100).astype(int)) == {1, 2}


def test_cross_validation_round_is_out_of_sample_and_equals_incv_first_iteration():
    rng = np.random.default_rng(4)
    y = rng.integers(0, C, 201)
    train = RecordingTraining(y)
    probs = selection.cross_validation_probs(train, len(y), C, seed=7)
    assert len(train.calls) == 2
    _check_out_of_sample(probs, train.calls)
    st = incv.incv_select(y, num_classes=C, pattern="sym", seed=7, iterations=1,
                          train_fn=RecordingTraining(y))
    np.testing.assert_array_equal(probs, st["oos_probs"])  # the same halves, in order


def test_noisy_cv_two_folds_is_out_of_sample(tmp_path, monkeypatch):
    """noisy_cv --folds 2 trains the other fold too; every training sample's saved row
    comes from the fold that held it out (training.train_folds scripted)."""
    from noisylabels import noisy_cv, training

    calls = []

    def train_and_predict(model, initial, x_fit, y_fit, x_held, y_held, **kw):
        calls.append((set(x_fit[:, 0, 0, 0].astype(int).tolist()),
                      set(x_held[:, 0, 0, 0].astype(int).tolist())))
        probs = np.full((len(x_held), C), 0.5 / (C - 1))
        probs[np.arange(len(x_held)), y_held] = 0.5
        probs[:, 0] = len(calls) / 100
        return probs, {"history": {}, "best_epoch": None}

    class Model:
        def predict(self, x, **kw):
            return np.full((len(x), C), 1.0 / C)

    monkeypatch.setattr(training, "train_and_predict", train_and_predict)
    n = 120
    x = np.zeros((n, 2, 2, 1), np.float32)
    x[:, 0, 0, 0] = np.arange(n)  # each image carries its index
    y = np.arange(n) % C
    runs = training.train_folds(Model(), None, x, y, folds=[(np.arange(60), np.arange(60, n)),
                                                            (np.arange(60, n), np.arange(60))],
                                x_test=x[:5], epochs=1)
    assert len(runs) == 2 and runs[1]["test_probs"].shape == (5, C)
    oos = np.empty((n, C))
    oos[np.arange(60, n)], oos[np.arange(60)] = runs[0]["probs"], runs[1]["probs"]
    _check_out_of_sample(oos, calls)
    assert noisy_cv.parse_args(["--folds", "2"]).folds == 2
    assert noisy_cv.parse_args([]).folds == 1  # the paper's run


BASE = ["--dataset", "digits", "--arch", "cnn", "--n_train", "300", "--incv_epochs", "2",
        "--incv_iterations", "1", "--epochs", "2", "--noise_pattern", "sym",
        "--noise_ratio", "0.5", "--verbose", "0"]


@pytest.fixture(scope="module")
def selectors_run(digits_all_methods):
    """incv, cl and ncv (with coteaching and standard beside them) on conftest.DIGITS_INCV."""
    return digits_all_methods


def test_every_selector_writes_the_same_files(selectors_run):
    results, summaries = selectors_run
    setting = os.path.join(results, "digits", "sym", "0.5")
    files = {}
    for method in ("incv", "cl", "ncv"):
        out = os.path.join(setting, method, "seed0")
        files[method] = {f.replace(method.upper(), "<METHOD>") for f in os.listdir(out)
                         if not f.startswith("incv")}  # INCV's own state and figure
        s = json.load(open(os.path.join(out, "summary.json")))
        with open(os.path.join(out, f"digits_sym0.5_{method.upper()}_results.csv")) as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0]) == ["y", "y_noisy", "select", "candidate", "eval_ratio"]
        selected = np.array([r["select"] == "True" for r in rows])
        assert selected.sum() == s["selection"]["selected"]
        with open(os.path.join(out, "cleaned_set.csv")) as f:
            status = [r["status"] for r in csv.DictReader(f)]
        assert np.array_equal(np.array(status) == "selected", selected)
        for k in ("label_precision", "label_recall", "candidates"):
            assert k in s["selection"], (method, k)
        est = s["noise_estimates"]
        for k in ("held_out_formula", "confident_learning", "actual", "cl_noise_matrix", "empirical_T"):
            assert k in est, (method, k)
        # e_S recomputed from the method's own e (sec. 4), and the final test accuracy from
        # the last log row
        assert s["forget_rate"] == pytest.approx(
            noise.expected_noise_of_selected(s["estimated_noise_ratio"], "sym", 10))
        last = json.loads(open(os.path.join(out, "log.jsonl")).read().splitlines()[-1])
        assert s["test_accuracy"]["model1"] == last["test_accuracy_model1"]
        # one name per estimate: the method's e is the estimate its summary names
        is_ = {"incv": "incv_first_half", "cl": "confident_learning",
               "ncv": "held_out_formula"}[method]
        assert s["estimated_noise_ratio_is"] == is_ and is_ in selection.ESTIMATES
        assert s["estimated_noise_ratio"] == pytest.approx(est[is_])
    assert files["cl"] == files["ncv"] and files["incv"] == files["cl"], files
    # cl and ncv judged INCV's own first-iteration probabilities (the same predictions)
    p = {m: np.load(os.path.join(setting, m, "seed0", "probabilities.npz"))["probs"]
         for m in ("incv", "cl", "ncv")}
    np.testing.assert_array_equal(p["cl"], p["incv"])
    np.testing.assert_array_equal(p["ncv"], p["incv"])
    assert summaries["cl"]["probabilities_from"].endswith("probabilities.npz")
    assert summaries["incv"]["noise_estimates"]["held_out_formula"] == pytest.approx(
        summaries["cl"]["noise_estimates"]["held_out_formula"])
    ncv = summaries["ncv"]
    assert ncv["estimated_noise_ratio"] == pytest.approx(ncv["noise_estimates"]["held_out_formula"])
    cl = summaries["cl"]
    assert cl["estimated_noise_ratio"] == pytest.approx(
        cl["noise_estimates"]["confident_learning"])
    assert cl["expected_noise_of_selected"] == pytest.approx(
        noise.expected_noise_of_selected(cl["estimated_noise_ratio"], "sym", 10))


def test_cl_trains_its_own_round_without_an_incv_run(tmp_path):
    from noisylabels import incv_train

    (s,) = incv_train.main(incv_train.parse_args(
        BASE + ["--method", "ncv", "--incv_only", "--results_dir", str(tmp_path)]))
    assert s["probabilities_from"].startswith("trained")
    out = os.path.join(str(tmp_path), "digits", "sym", "0.5", "ncv", "seed0")
    probs = np.load(os.path.join(out, "probabilities.npz"))["probs"]
    assert probs.shape == (300, 10) and np.isfinite(probs).all()
    log = [json.loads(line) for line in open(os.path.join(out, "incv_log.jsonl"))]
    assert {r["run"] for r in log} == {"cross-validation-half1", "cross-validation-half2"}


def test_table_lines_up_the_selectors_and_estimators(selectors_run):
    from noisylabels import table

    results, summaries = selectors_run
    tables = table.build_tables(table.collect_runs([results]))
    sel = {r["method"]: r for r in tables["selectors"]}
    assert set(sel) == {"INCV", "confident learning", "noisy CV rule"}
    for method, label in table.SELECTOR_LABELS.items():
        s = summaries[method]["selection"]
        assert sel[label]["selected_mean"] == s["selected"]
        assert sel[label]["label_precision_mean"] == pytest.approx(s["label_precision"])
    (est,) = tables["noise_estimates"]
    assert est["n"] == 1  # one seed: incv, cl and ncv share its probabilities
    assert est["held_out_formula_mean"] == pytest.approx(summaries["ncv"]["estimated_noise_ratio"])
    assert est["confident_learning_mean"] == pytest.approx(
        summaries["cl"]["estimated_noise_ratio"])
    assert est["incv_first_half_mean"] == pytest.approx(summaries["incv"]["estimated_noise_ratio"])
    assert est["actual_mean"] == pytest.approx(summaries["incv"]["actual_noise_ratio"])
    md = table.format_markdown(tables)
    assert "## Selectors: INCV vs. confident learning" in md
    assert "## Noise-ratio estimates" in md
    assert "Confident learning + Co-teaching" in md  # the accuracy table has its row


def test_noisy_cv_two_folds_end_to_end(tmp_path):
    from noisylabels import noisy_cv

    (s,) = noisy_cv.main(noisy_cv.parse_args(
        ["--dataset", "digits", "--arch", "cnn", "--epochs", "1", "--n_train", "200",
         "--folds", "2", "--noise_pattern", "asym", "--noise_ratio", "0.4",
         "--results_dir", str(tmp_path), "--verbose", "0"]))
    out = os.path.join(str(tmp_path), "digits", "asym", "0.4", "seed0")
    pred = np.load(os.path.join(out, "predictions.npz"))
    lab = np.load(os.path.join(out, "labels.npz"))
    assert pred["oos_probs"].shape == (200, 10) and np.isfinite(pred["oos_probs"]).all()
    np.testing.assert_array_equal(pred["oos_probs"][lab["idx_held"]], pred["held_out_probs"])
    assert s["n_held_out"] == 200 and s["folds"] == 2
    hit = pred["oos_probs"].argmax(1) == lab["y_noisy"]
    assert s["noisy_accuracy"] == pytest.approx(hit.mean())  # measured on all 200
    for k in ("held_out_formula", "confident_learning", "confusion_to_T_fro", "cl_noise_matrix_to_T_fro"):
        assert k in s["noise_estimates"]
    assert os.path.isfile(os.path.join(out, "noise_matrices.png"))
    folds = {json.loads(line)["fold"] for line in open(os.path.join(out, "log.jsonl"))}
    assert folds == {1, 2}


def test_noise_estimates_survive_what_cleanlab_refuses():
    y = np.zeros(50, int)  # one given class: cleanlab raises, the report goes on
    probs = np.full((50, C), 0.1)
    est = selection.noise_estimates(probs, y, num_classes=C, y_true=y)
    assert est["confident_learning"] is None and "2 classes" in est["cl_error"]
    assert est["held_out_formula"] == 0.0 and "confusion_to_T_mad" in est
    assert "cl_noise_matrix_to_T_mad" not in est
    with pytest.raises(ValueError, match="2 classes"):
        selection.select_cl(probs, y, num_classes=C)


@pytest.mark.parametrize("change, reused", [
    ([], True),
    (["--epochs", "7", "--tk", "3", "--incv_iterations", "1"], True),  # after the first round
    (["--precision", "mixed_bfloat16"], False),
    (["--batch_size", "64"], False),
    (["--incv_optimizer", "carry"], False),  # the second run of the round starts elsewhere
    (["--lr", "0.002"], False),
])
def test_cl_reuses_incv_probabilities_only_under_the_same_first_round(selectors_run, change,
                                                                       reused, monkeypatch):
    """Every flag that can change INCV's first-round probabilities must match for cl / ncv
    to reuse them (the hand-kept list missed --precision and --image_size)."""
    from noisylabels import flags, incv_train

    # --image_size changes every image (digits refuse it, so it is checked here by name)
    assert "image_size" not in incv_train._NOT_OOS_FLAGS
    results, _ = selectors_run
    setting = os.path.join(results, "digits", "sym", "0.5")
    args = incv_train.parse_args(BASE + ["--method", "cl", "--results_dir", results] + change)
    data = flags.load_training_data(args, lambda *a: None)
    y_noisy = np.load(os.path.join(setting, "incv", "seed0", "labels.npz"))["y_noisy"]
    trained = []

    def fake_train_fn(config, data, y, **kw):
        trained.append(config)
        return lambda fit, held, keep_best, tag: np.full((len(held), 10), 0.1, np.float32)

    monkeypatch.setattr(incv, "make_incv_train_fn", fake_train_fn)
    probs, source = incv_train.out_of_sample_probs(
        args, data, y_noisy, seed=0, out=os.path.join(setting, "cl", "seed0"),
        printer=lambda *a: None)
    incv_probs = np.load(os.path.join(setting, "incv", "seed0", "probabilities.npz"))["probs"]
    if reused:
        assert not trained and source.endswith("probabilities.npz")
        np.testing.assert_array_equal(probs, incv_probs)
    else:
        assert len(trained) == 1 and source.startswith("trained")
        assert np.all(probs == np.float32(0.1))
