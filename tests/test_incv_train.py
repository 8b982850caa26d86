"""incv_train.py end to end on digits: every method, outputs consistent, reuse and resume."""

import csv
import json
import os

import numpy as np
import pytest
from conftest import DIGITS_INCV, lp_lr, read_jsonl

from noisylabels import incv_train, noise, training

BASE = DIGITS_INCV


@pytest.fixture(scope="module")
def finished(digits_all_methods):
    """incv, cl, ncv, coteaching and standard on BASE (conftest.DIGITS_INCV)."""
    return digits_all_methods


def test_every_method_writes_comparable_results(finished):
    results, summaries = finished
    setting = os.path.join(results, "digits", "sym", "0.5")
    for method in summaries:  # the methods the fixture ran
        out = os.path.join(setting, method, "seed0")
        s = json.load(open(os.path.join(out, "summary.json")))
        log = read_jsonl(os.path.join(out, "log.jsonl"))
        assert [r["epoch"] for r in log] == [1, 2, 3]
        assert s["test_accuracy"]["model1"] == pytest.approx(log[-1]["test_accuracy_model1"])
        two = method != "standard"
        assert (s["test_accuracy"]["model2"] is not None) == two
        assert all(("test_accuracy_model2" in r) == two for r in log)
        # Final epoch only, never an epoch chosen on the test set.
        assert "best" not in s["test_accuracy"]
        nets = [log[-1]["test_accuracy_model1"]] + (
            [log[-1]["test_accuracy_model2"]] if two else [])
        assert s["test_accuracy"]["mean"] == pytest.approx(np.mean(nets))
        assert os.path.isfile(os.path.join(out, "test_accuracy.png"))
        assert json.load(open(os.path.join(out, "config.json")))["run"]["method"] == method
    lr = [r["lr"] for r in read_jsonl(os.path.join(setting, "incv", "seed0", "log.jsonl"))]
    # drops after 79, 119, 159, 179 of 200 epochs, scaled to 3: 1.185, 1.785, ...
    assert lr == pytest.approx([1e-3, 1e-3, 1e-5])
    # Plain Co-teaching forgets the noise ratio estimated from one half's held-out accuracy
    # (the best epoch's weights: the run keeps its best checkpoint).
    est = [r for r in read_jsonl(os.path.join(setting, "coteaching", "seed0", "incv_log.jsonl"))
           if r["run"] == "noise-estimate"]
    assert len(est) == 2
    acc = max(r["val_noisy_accuracy"] for r in est)
    assert summaries["coteaching"]["forget_rate"] == pytest.approx(
        noise.estimate_noise_ratio(acc, 10), abs=1e-12)
    assert summaries["coteaching"]["estimated_noise_ratio"] == summaries["coteaching"][
        "forget_rate"]


def test_incv_outputs_agree_with_the_csv(finished):
    results, summaries = finished
    out = os.path.join(results, "digits", "sym", "0.5", "incv", "seed0")
    s = summaries["incv"]
    assert [r["iteration"] for r in s["incv"]] == [1, 2]
    with open(os.path.join(out, "digits_sym0.5_INCV_results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 300 and list(rows[0]) == ["y", "y_noisy", "select", "candidate",
                                                  "eval_ratio"]
    y = np.array([int(r["y"]) for r in rows])
    yn = np.array([int(r["y_noisy"]) for r in rows])
    sel = np.array([r["select"] == "True" for r in rows])
    cand = np.array([r["candidate"] == "True" for r in rows])
    assert not (sel & cand).any()
    assert s["incv"][-1]["selected"] == sel.sum() == s["selection"]["selected"]
    assert s["incv"][-1]["candidates"] == cand.sum()
    assert (s["incv"][-1]["label_precision"], s["incv"][-1]["label_recall"]) == pytest.approx(
        lp_lr(y, yn, sel))
    assert float(rows[0]["eval_ratio"]) == pytest.approx(s["estimated_noise_ratio"])
    labels = np.load(os.path.join(out, "labels.npz"))
    assert np.array_equal(labels["y_noisy"], yn) and np.array_equal(labels["y_true"], y)
    assert len(read_jsonl(os.path.join(out, "incv_log.jsonl"))) == 2 * 2 * 2  # 2 it x 2 halves
    assert os.path.isfile(os.path.join(out, "incv.png"))


def test_saved_selection_is_reused_without_incv(finished, tmp_path):
    results, summaries = finished
    csv_path = os.path.join(results, "digits", "sym", "0.5", "incv", "seed0",
                            "digits_sym0.5_INCV_results.csv")
    args = incv_train.parse_args(BASE + ["--incv_results", csv_path, "--epochs", "1",
                                         "--results_dir", str(tmp_path)])
    (s,) = incv_train.main(args)
    out = os.path.join(tmp_path, "digits", "sym", "0.5", "incv", "seed0")
    assert not os.path.exists(os.path.join(out, "incv_log.jsonl"))
    assert s["selection"] == summaries["incv"]["selection"]


@pytest.mark.parametrize("source", ["true_noise_of_s", "true_ratio"])
def test_oracle_forget_rate_replaces_the_one_from_e(finished, tmp_path, monkeypatch, source):
    """--incv_forget_rate: the same selection (reused CSV) trained with the forget rate from
    the clean labels; the paper's run keeps e_S from INCV's estimate e."""
    results, summaries = finished
    paper = summaries["incv"]
    e = paper["estimated_noise_ratio"]
    assert "forget_rate_source" not in paper
    assert paper["forget_rate"] == pytest.approx(noise.expected_noise_of_selected(e, "sym", 10))
    csv_path = os.path.join(results, "digits", "sym", "0.5", "incv", "seed0",
                            "digits_sym0.5_INCV_results.csv")
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    y = np.array([int(r["y"]) for r in rows])
    yn = np.array([int(r["y_noisy"]) for r in rows])
    sel = np.array([r["select"] == "True" for r in rows])
    from noisylabels import coteaching  # Keras-based: loaded by the fixture's run

    trained = {}  # what the training itself received, not only what the summary says
    real = coteaching.train_two_networks

    def spy(*a, **kw):
        trained.update(forget_rate=kw["forget_rate"], warmup=kw["warmup"])
        return real(*a, **kw)

    monkeypatch.setattr(coteaching, "train_two_networks", spy)
    args = incv_train.parse_args(BASE + ["--incv_results", csv_path, "--epochs", "3",
                                         "--incv_forget_rate", source,
                                         "--results_dir", str(tmp_path)])
    (s,) = incv_train.main(args)
    assert (trained["forget_rate"], trained["warmup"]) == (s["forget_rate"],
                                                           s["warmup_epochs"])
    assert s["forget_rate_source"] == source
    if source == "true_noise_of_s":  # S's own noise: 1 - LP, the warm-up from e kept
        want = float(np.mean(yn[sel] != y[sel]))
        assert want == pytest.approx(1.0 - s["selection"]["label_precision"])
        assert s["warmup_epochs"] == paper["warmup_epochs"]
    else:  # e_S and the warm-up from the true ratio in place of e
        true_e = float(np.mean(yn != y))
        want = noise.expected_noise_of_selected(true_e, "sym", 10)
        # (3 epochs round the 40- and 80-epoch warm-ups alike; the toy test below tells
        # them apart)
        assert s["warmup_epochs"] == coteaching.warmup_epochs("sym", true_e, 3)
    assert s["forget_rate"] == pytest.approx(want, abs=1e-12)
    assert s["forget_rate"] != pytest.approx(paper["forget_rate"], abs=1e-3)  # it changed
    # the paper's e_S stays recorded beside it
    assert s["expected_noise_of_selected"] == pytest.approx(paper["forget_rate"])
    config = json.load(open(os.path.join(tmp_path, "digits", "sym", "0.5", "incv", "seed0",
                                         "config.json")))
    assert config["args"]["incv_forget_rate"] == source


def test_oracle_plan_on_toy_labels():
    y_true = np.zeros(10, np.int64)
    y_noisy = y_true.copy()
    y_noisy[[0, 6, 7]] = 1  # true ratio 0.3; S = the first 5, one of them noisy
    s_idx = np.arange(5)
    kw = dict(y_noisy=y_noisy, y_true=y_true, s_idx=s_idx, noise_type="sym", num_classes=10,
              epochs=200, warmup=40)
    assert incv_train.oracle_plan("true_noise_of_s", **kw) == {"forget_rate": 0.2,
                                                               "warmup": 40}
    # 0.3^2 / (0.3^2 + 9 * 0.7^2), and the warm-up of e = 0.3 (40 of 200 epochs)
    got = incv_train.oracle_plan("true_ratio", **kw)
    assert got["forget_rate"] == pytest.approx(0.09 / (0.09 + 9 * 0.49))
    assert got["warmup"] == 40
    # a true ratio 0.7 > 0.6: the 80-epoch warm-up
    y_noisy[:7] = 1
    assert incv_train.oracle_plan("true_ratio", **{**kw, "y_noisy": y_noisy})["warmup"] == 80
    with pytest.raises(ValueError, match="needs the clean labels"):
        incv_train.oracle_plan("true_ratio", **{**kw, "y_true": None})
    with pytest.raises(ValueError, match="unknown --incv_forget_rate"):
        incv_train.oracle_plan("truth", **kw)


def test_killed_run_resumes(finished, tmp_path, monkeypatch):
    argv = BASE + ["--results_dir", str(tmp_path)]
    real = training.EpochCheckpoint.on_epoch_end

    def die_after_two(self, epoch, logs=None):
        real(self, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt  # the run is killed after saving epoch 2

    monkeypatch.setattr(training.EpochCheckpoint, "on_epoch_end", die_after_two)
    with pytest.raises(KeyboardInterrupt):
        incv_train.main(incv_train.parse_args(argv))
    monkeypatch.setattr(training.EpochCheckpoint, "on_epoch_end", real)
    out = os.path.join(tmp_path, "digits", "sym", "0.5", "incv", "seed0")
    assert not os.path.exists(os.path.join(out, "summary.json"))
    with pytest.raises(FileExistsError):
        incv_train.main(incv_train.parse_args(argv))
    incv_lines = len(read_jsonl(os.path.join(out, "incv_log.jsonl")))
    (s,) = incv_train.main(incv_train.parse_args(argv + ["--resume"]))
    assert len(read_jsonl(os.path.join(out, "incv_log.jsonl"))) == incv_lines  # INCV not redone
    log = read_jsonl(os.path.join(out, "log.jsonl"))
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert os.path.isfile(os.path.join(out, "summary.json")) and len(s["incv"]) == 2
    # Killed after the warm-up's last epoch (2 of 3 scaled: 40 of 200 -> 0-based epoch 1):
    # the resumed run crosses into the S + C phase and ends where the uninterrupted one did.
    assert s["warmup_epochs"] == 1
    ref = os.path.join(finished[0], "digits", "sym", "0.5", "incv", "seed0")
    for a, b in zip(log, read_jsonl(os.path.join(ref, "log.jsonl"))):
        for key in ("test_accuracy_model1", "test_accuracy_model2", "keep", "lr"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), (a["epoch"], key)
    with np.load(os.path.join(out, "checkpoint.npz")) as got, \
            np.load(os.path.join(ref, "checkpoint.npz")) as want:
        assert sorted(got.files) == sorted(want.files)
        for k in want.files:
            np.testing.assert_allclose(got[k], want[k], atol=1e-5, err_msg=k)


def test_choices_agree_with_the_modules():
    from noisylabels import coteaching, incv

    assert incv_train.SELECTIONS == coteaching.SELECTIONS
    assert incv_train.INCV_OPTIMIZERS == incv.INCV_OPTIMIZERS
    args = incv_train.parse_args(BASE)
    assert (args.selection, args.incv_optimizer) == ("fused", "fresh")
    with pytest.raises(SystemExit) as exit_info:  # per-replica picks are fused's only
        incv_train.parse_args(BASE + ["--selection", "authors", "--devices", "all"])
    assert exit_info.value.code == 2


def test_carried_incv_optimizer_survives_a_resume_and_authors_selection_runs(
        tmp_path, monkeypatch):
    argv = BASE + ["--epochs", "2", "--incv_optimizer", "carry", "--selection", "authors",
                   "--results_dir", str(tmp_path)]
    real = training.train_and_predict
    calls = []

    def recording(model, *a, **kw):
        calls.append((kw.get("reset_optimizer_state", True),
                      int(model.optimizer.iterations.numpy())))
        if len(calls) == 3 and not killed:
            killed.append(True)
            raise KeyboardInterrupt  # killed as INCV iteration 2 starts
        return real(model, *a, **kw)

    killed = []
    monkeypatch.setattr(training, "train_and_predict", recording)
    with pytest.raises(KeyboardInterrupt):
        incv_train.main(incv_train.parse_args(argv))
    out = os.path.join(tmp_path, "digits", "sym", "0.5", "incv", "seed0")
    saved = np.load(os.path.join(out, "incv_optimizer.npz"))
    assert int(saved["runs_done"]) == 2
    # Run 1 starts fresh, run 2 from run 1's final state (2 epochs of ceil(150/128) = 2 steps;
    # iteration 1 keeps the best epoch, so its state can be of an earlier epoch).
    assert calls[0] == (True, 0) and calls[1][0] is False and 0 < calls[1][1] <= 4
    (s,) = incv_train.main(incv_train.parse_args(argv + ["--resume"]))
    # Resumed at iteration 2: the model is new, yet its first run starts from the saved state.
    step_var = [k for k in saved.files if k.startswith("v")]
    assert calls[3][0] is False and calls[3][1] > 0
    assert calls[3][1] in {int(saved[k]) for k in step_var if saved[k].shape == ()}
    assert s["incv_optimizer"] == "carry" and s["coteaching_selection"] == "authors"
    last = read_jsonl(os.path.join(out, "log.jsonl"))[-1]
    assert len(s["incv"]) == 2 and s["test_accuracy"]["mean"] == pytest.approx(
        (last["test_accuracy_model1"] + last["test_accuracy_model2"]) / 2)
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["args"]["selection"] == "authors"


@pytest.mark.parametrize("method", ["incv", "ncv"])
def test_an_empty_selection_stops_before_training(tmp_path, monkeypatch, method):
    """A selection S with no sample leaves nothing for Co-teaching to train on (its epochs
    would run 0 steps): the run stops with the reason, writes no summary, trains nothing."""
    from noisylabels import coteaching, incv, selection

    n = 300

    def empty(*a, **k):
        return {"selected": np.zeros(n, bool), "candidate": np.ones(n, bool),
                "eval_ratio": 0.5, "iterations": [], "heldout_loss": np.full(n, np.nan),
                "oos_probs": None}

    monkeypatch.setattr(incv, "incv_select", empty)
    monkeypatch.setitem(selection.SELECTORS, "ncv", empty)
    monkeypatch.setattr(incv, "make_incv_train_fn", lambda *a, **k: (
        lambda fit, held, keep_best, tag: np.full((len(held), 10), 0.1, np.float32)))
    trained = []
    monkeypatch.setattr(coteaching, "train_two_networks", lambda *a, **k: trained.append(a))
    args = incv_train.parse_args(BASE + ["--method", method, "--results_dir", str(tmp_path)])
    with pytest.raises(ValueError, match=f"^{method}'s selection S is empty in .*: nothing to "
                                         "train Co-teaching on"):
        incv_train.main(args)
    assert not trained
    out = tmp_path / "digits" / "sym" / "0.5" / method / "seed0"
    assert (out / "config.json").exists() and not (out / "summary.json").exists()
