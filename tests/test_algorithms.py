"""Table 1's other four methods (noisylabels/algorithms/): F-correction, Decoupling, MentorNet
and D2L.

- the numpy parts (T's estimator and the noisy-CV T, LID, the turning point, alpha, the
  example-dropout table) on hand-computed toy values;
- the keras.ops rules' toy values and one SGD step through each method's training step
  against the hand-written loss's gradient: the cases of tests/backend_cases.py, imported
  here so they run on TensorFlow (tests/test_backends.py runs them on JAX and PyTorch);
- incv_train.py end to end on digits: each method killed after epoch 2 and resumed ends
  where the uninterrupted run did; --skip_existing, --list_runs and the SLURM launcher
  take the new methods.
"""

import json
import os

import numpy as np
import pytest

# The keras.ops cases, written once for every backend: collected here on TensorFlow.
from backend_cases import (  # noqa: F401
    test_d2l_alpha_assigned_after_tracing_changes_the_next_step_and_evaluation,
    test_d2l_loss_toy_values,
    test_d2l_rule_step_is_the_hand_computed_gradient,
    test_decoupling_step_is_the_hand_computed_update_on_disagreements,
    test_decoupling_toy_values,
    test_forward_loss_toy_values,
    test_forward_rule_step_is_the_hand_computed_gradient,
    test_mentornet_example_dropout_keeps_floor_b_times_one_minus_r,
    test_mentornet_first_step_from_lambda_zero_inside_fit,
    test_mentornet_pd_step_is_the_hand_computed_gradient_and_keeps_its_state,
    test_mentornet_pd_toy_values,
    test_mentornet_percentile_is_tensorflows_nearest_and_keep_count_floors,
    test_self_paced_step_keeps_the_small_losses,
    test_self_paced_toy_value,
    test_table1_methods_train_under_mixed_precision,
)
from conftest import read_jsonl

from noisylabels import algorithms, incv_train, metrics, noise, slurm, training
from noisylabels.algorithms import d2l, fcorrection

# -- F-correction's T ------------------------------------------------------------------------

# Six softmax rows, two per class; the 97% filter ("higher": the maximum of 6) drops each
# column's largest entry, so the second largest row is T's row; 100 keeps the argmax.
P6 = np.array([[.95, .03, .02], [.80, .15, .05], [.05, .90, .05], [.10, .70, .20],
               [.10, .10, .80], [.05, .05, .90]])


def test_estimator_takes_the_row_at_the_97th_percentile_or_the_argmax():
    np.testing.assert_allclose(fcorrection.estimate_transition(P6),
                               [[.80, .15, .05], [.10, .70, .20], [.10, .10, .80]])
    np.testing.assert_allclose(fcorrection.estimate_transition(P6, percentile=100),
                               [[.95, .03, .02], [.05, .90, .05], [.05, .05, .90]])
    # rows normalised; the input is not modified
    before = P6.copy()
    T = fcorrection.estimate_transition(P6 * 2.0)
    np.testing.assert_allclose(T.sum(1), 1.0)
    np.testing.assert_array_equal(P6, before)


def test_ncv_transition_inverts_the_accuracy_formula_into_the_declared_pattern():
    e, c = 0.3, 3
    sym = np.full((3, 3), 0.15) + 0.55 * np.eye(3)
    acc = (1 - e) ** 2 + e ** 2 / (c - 1)  # 0.535
    got_e, T = fcorrection.ncv_transition(acc, pattern="sym", num_classes=c)
    assert got_e == pytest.approx(e, abs=1e-9)
    np.testing.assert_allclose(T, sym, atol=1e-9)
    # the held-out confusion against noisy labels (uniform prior) is T^T T, not T: its
    # diagonal is the accuracy
    np.testing.assert_allclose(np.diag(sym.T @ sym), acc)
    assert not np.allclose(sym.T @ sym, sym)
    got_e, T = fcorrection.ncv_transition((1 - 0.4) ** 2 + 0.4 ** 2, pattern="asym",
                                          num_classes=3)
    assert got_e == pytest.approx(0.4, abs=1e-9)
    np.testing.assert_allclose(T, [[.6, .4, 0], [0, .6, .4], [.4, 0, .6]], atol=1e-9)
    np.testing.assert_allclose(T, noise.transition_matrix("asym", 0.4, 3), atol=1e-9)
    assert fcorrection.pair_noise_ratio(0.4) == 0.5  # below the formula's minimum
    assert fcorrection.pair_noise_ratio(1.0) == 0.0


def test_empirical_transition_and_split():
    # F-correction's true T of labels as given (clean ones known)
    T = metrics.normalized_confusion(np.array([0, 0, 0, 0, 1, 1, 2]),
                                     np.array([0, 0, 1, 2, 1, 1, 0]), 4)
    np.testing.assert_allclose(T, [[.5, .25, .25, 0], [0, 1, 0, 0], [1, 0, 0, 0],
                                   [0, 0, 0, 0]])
    tr, va = fcorrection.split(200, fraction=0.1, seed=3)
    assert len(va) == 20 and len(tr) == 180 and not set(tr) & set(va)
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(200))
    again = fcorrection.split(200, fraction=0.1, seed=3)
    assert np.array_equal(again[1], va)
    assert not np.array_equal(fcorrection.split(200, fraction=0.1, seed=4)[1], va)


def test_best_validation_epoch_is_the_lowest_noisy_validation_loss():
    rows = [{"epoch": 1, "val_noisy_loss": 2.0, "test_accuracy_model1": .3},
            {"epoch": 2, "val_noisy_loss": 1.5, "test_accuracy_model1": .4},
            {"epoch": 3, "val_noisy_loss": 1.7, "test_accuracy_model1": .5}]
    assert fcorrection.best_validation_epoch(rows) == {"lowest_val_loss_epoch": {
        "epoch": 2, "val_noisy_loss": 1.5, "test_accuracy": .4}}
    assert fcorrection.best_validation_epoch([{"epoch": 1}]) == {}


# -- D2L's LID, turning point, alpha -----------------------------------------------------------

PTS = np.array([[0., 0.], [1., 0.], [0., 2.], [0., -4.]])


def test_lid_toy_values():
    # k = min(20, n - 1) = 3; -k / sum_j log(r_j / r_k + 1e-8)
    want = [1.442695, 1.478929, 1.438399, 3.843110]
    np.testing.assert_allclose(d2l.lid_mle(PTS), want, atol=1e-5)
    assert d2l.mean_lid(PTS) == pytest.approx(2.050783, abs=1e-5)
    # each point against its own batch: batches of 2 (k = 1, r_1 / r_k = 1)
    assert d2l.mean_lid(PTS, batch=2) == pytest.approx(-1 / np.log(1 + 1e-8), rel=1e-6)
    # k given: the 2 nearest only (point (0, 0): r = 1, 2)
    assert d2l.lid_mle(PTS, k=2)[0] == pytest.approx(-2 / (np.log(0.5 + 1e-8) +
                                                           np.log(1 + 1e-8)), rel=1e-6)


L_HIST = [10, 9, 8.5, 8.4, 8.6, 8.5, 9.5]


def test_turning_point_and_alpha_toy_values():
    # init 2, w 3: at epoch 6 the window [8.4, 8.6, 8.5], mean 8.5, std 0.081650
    W = np.array(L_HIST[-4:-1])
    assert (W.mean(), W.std()) == pytest.approx((8.5, 0.081650), abs=1e-6)
    assert d2l.is_turning_point(L_HIST, init_epoch=2, window=3)
    assert not d2l.is_turning_point(L_HIST[:-1], init_epoch=2, window=3)
    # 9.5 - 8.5 = 1 > 2 std; but with len(L) <= init + w nothing is looked at
    assert not d2l.is_turning_point(L_HIST, init_epoch=4, window=3)
    assert d2l.is_turning_point(L_HIST, init_epoch=3, window=3)
    # the sample std (ddof 1) would be 0.1: 8.5 + 2 * 0.1 = 8.7 vs population's 8.663
    assert d2l.is_turning_point([8.4, 8.6, 8.5, 8.68], init_epoch=0, window=3)
    assert d2l.alpha_at(L_HIST, 6, 12) == pytest.approx(np.exp(-0.5 * 9.5 / 8.4), abs=1e-9)
    assert d2l.alpha_at(L_HIST, 6, 12) == pytest.approx(0.568090, abs=1e-6)


# -- MentorNet's example-dropout table ---------------------------------------------------------

def test_dropout_table_from_rate_count_pairs():
    t = algorithms.dropout_table("0.5,17,0.05,83")
    assert t.shape == (100,) and t.dtype == np.float32
    assert (t[:17] == 0.5).all() and np.allclose(t[17:], 0.05)
    assert (algorithms.dropout_table("0.0,100") == 0).all()
    # a rate of 1 drops every sample (the reference's parse_dropout_rate_list allows it)
    assert (algorithms.dropout_table("0.5,95,1.0,5")[95:] == 1.0).all()


@pytest.mark.parametrize("spec", ["0.5,10", "0.5,17,0.05", "1.5,100", "-0.1,100",
                                  "0.5,-1,0.5,101", "0.5,50,0.1,60", "a,100"])
def test_bad_dropout_tables_raise(spec):
    with pytest.raises(ValueError, match="--mentornet_dropout|could not convert|invalid"):
        algorithms.dropout_table(spec)


def test_every_method_is_registered_with_its_flags():
    assert set(algorithms.ALGORITHMS) <= set(incv_train.METHODS)
    # INCV + Co-teaching's ablation flag is listed there too (one method's flag)
    assert set(algorithms.FLAGS) == set(algorithms.ALGORITHMS) | {"incv"}
    for name in algorithms.ALGORITHMS:
        assert callable(algorithms.load(name).prepare)
    with pytest.raises(ValueError, match="unknown method"):
        algorithms.load("standard")
    args = incv_train.parse_args(["--method", *algorithms.ALGORITHMS])
    assert (args.fcorrection_T, args.decoupling_min_batch, args.mentornet_percentile,
            args.mentornet_dropout, args.d2l_window) == ("estimated", 0.1, 0.7,
                                                         "0.5,17,0.05,83", 5)


# -- end to end: killed after epoch 2 and resumed == uninterrupted ---------------------------

NEW = list(algorithms.ALGORITHMS)
E2E = ["--dataset", "digits", "--arch", "cnn", "--n_train", "200", "--epochs", "4",
       "--noise_pattern", "sym", "--noisy_ratio", "0.4", "--verbose", "0",
       "--d2l_init_epoch", "0", "--d2l_window", "2"]
KILLED_AFTER = 2


def _forced_turn(monkeypatch):
    """D2L's turning point at the latest when the history holds 3 LIDs (epoch 3 of 4, the
    first a resumed run trains; the earliest --d2l_init_epoch 0 --d2l_window 2 allow), so
    that the rollback and alpha cross the resume; found there only if the resumed run read
    its history back."""
    real = d2l.is_turning_point
    monkeypatch.setattr(d2l, "is_turning_point", lambda history, **kw: len(
        history) == KILLED_AFTER + 1 or real(history, **kw))


@pytest.fixture(scope="module")
def resumed_and_uninterrupted(tmp_path_factory):
    """The four methods uninterrupted (one grid), and each killed after epoch 2 then
    resumed (one --resume grid). Returns (reference results, resumed results, summaries
    of the resume)."""
    ref = str(tmp_path_factory.mktemp("uninterrupted"))
    run = str(tmp_path_factory.mktemp("killed"))
    with pytest.MonkeyPatch.context() as mp:
        _forced_turn(mp)
        incv_train.main(incv_train.parse_args(E2E + ["--method", *NEW, "--results_dir", ref]))
        real = training.EpochCheckpoint.on_epoch_end

        def die(self, epoch, logs=None):
            real(self, epoch, logs)
            if epoch + 1 == KILLED_AFTER:
                raise KeyboardInterrupt  # killed once epoch 2's checkpoint is written

        for method in NEW:
            mp.setattr(training.EpochCheckpoint, "on_epoch_end", die)
            with pytest.raises(KeyboardInterrupt):
                incv_train.main(incv_train.parse_args(E2E + ["--method", method,
                                                             "--results_dir", run]))
            mp.setattr(training.EpochCheckpoint, "on_epoch_end", real)
        killed = {m: [r["epoch"] for r in read_jsonl(_out(run, m, "log.jsonl"))] for m in NEW}
        summaries = incv_train.main(incv_train.parse_args(
            E2E + ["--method", *NEW, "--results_dir", run, "--resume"]))
    return ref, run, killed, {s["method"]: s for s in summaries}


def _out(results, method, *name):
    return os.path.join(results, "digits", "sym", "0.4", method, "seed0", *name)


# Per-epoch log entries that must agree (all the methods' own keys included).
LOG_KEYS = ("test_accuracy_model1", "test_accuracy_model2", "loss", "loss1", "loss2", "lr",
            "weight", "disagree", "val_noisy_loss", "lid", "d2l_alpha", "d2l_turned",
            "train_loss_mix_model1")


@pytest.mark.parametrize("method", NEW)
def test_killed_and_resumed_equals_uninterrupted(resumed_and_uninterrupted, method):
    ref, run, killed, summaries = resumed_and_uninterrupted
    assert killed[method] == [1, 2]  # the kill happened after epoch 2
    got, want = read_jsonl(_out(run, method, "log.jsonl")), read_jsonl(_out(ref, method,
                                                                             "log.jsonl"))
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want] == [1, 2, 3, 4]
    checked = set()
    for a, b in zip(got, want):
        assert set(a) == set(b)
        for key in LOG_KEYS:
            if key in b:
                assert a[key] == pytest.approx(b[key], abs=1e-6), (method, a["epoch"], key)
                checked.add(key)
    own = {"fcorrection": "val_noisy_loss", "decoupling": "disagree", "mentornet": "weight",
           "d2l": "lid"}[method]
    assert {"test_accuracy_model1", own, "loss" if method != "decoupling" else "loss1"} \
        <= checked
    with np.load(_out(run, method, "checkpoint.npz")) as g, \
            np.load(_out(ref, method, "checkpoint.npz")) as w:
        assert sorted(g.files) == sorted(w.files)
        for k in w.files:
            np.testing.assert_allclose(g[k], w[k], atol=1e-5, err_msg=k)
    s = summaries[method]
    s_ref = json.load(open(_out(ref, method, "summary.json")))
    assert s["test_accuracy"] == pytest.approx(s_ref["test_accuracy"], abs=1e-6)
    for key in ("fcorrection", "mentornet", "d2l", "d2l_turning_epoch", "d2l_final_alpha",
                "lowest_val_loss_epoch"):
        assert (key in s) == (key in s_ref)
        if key in s_ref:
            _assert_close(s[key], s_ref[key], key)


def _assert_close(a, b, where):
    """Summary entries equal, numbers to 1e-6 (nested dicts entry by entry)."""
    if isinstance(b, dict):
        assert set(a) == set(b), where
        for k in b:
            _assert_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(b, float):
        assert a == pytest.approx(b, abs=1e-6), where
    else:
        assert a == b, where


def test_resumed_state_of_each_method(resumed_and_uninterrupted):
    """What crosses the resume: MentorNet's step counter (all 8 steps), D2L's history (4
    LIDs), its turning point at epoch 3 and alpha from then on, F-correction's T read back
    instead of a second stage A."""
    ref, run, _, summaries = resumed_and_uninterrupted
    log = read_jsonl(_out(run, "d2l", "log.jsonl"))
    assert [r["d2l_turned"] for r in log] == [0, 0, 1, 1]
    lids = [r["lid"] for r in log]
    # alpha = exp(-(e / E) L[-1] / min(L)), 0-based e
    assert log[2]["d2l_alpha"] == pytest.approx(np.exp(-(2 / 4) * lids[2] / min(lids[:3])),
                                                rel=1e-5)
    assert log[3]["d2l_alpha"] == pytest.approx(np.exp(-(3 / 4) * lids[3] / min(lids)),
                                                rel=1e-5)
    assert summaries["d2l"]["d2l_turning_epoch"] == 1  # len(L) - 2 at the turn
    assert os.path.isfile(_out(run, "d2l", "d2l_rollback.npz"))
    with np.load(_out(run, "d2l", "checkpoint.npz")) as f:
        arrays = [f[k] for k in f.files if k.startswith("w")]
    # d2l_lids (epochs + 1 slots): the 4 LIDs logged, then 0
    hist = [a for a in arrays if a.shape == (5,)]
    assert len(hist) == 1
    np.testing.assert_allclose(hist[0][:4], lids, rtol=1e-5)
    assert hist[0][4] == 0
    with np.load(_out(run, "mentornet", "checkpoint.npz")) as f:
        scalars = [f[k] for k in f.files if k.startswith("w") and f[k].shape == ()]
    # MentorNet trains on all 200 images: 2 batches x 4 epochs
    assert summaries["mentornet"]["mentornet"]["total_steps"] == 8
    assert any(s.dtype.kind == "i" and s == 8 for s in scalars), scalars
    assert [r["weight"] for r in read_jsonl(_out(run, "mentornet", "log.jsonl"))][0] < 1.0
    stage_a = read_jsonl(_out(run, "fcorrection", "stage_a_log.jsonl"))
    assert len(stage_a) == 4  # written by the killed run, not redone on --resume
    info = summaries["fcorrection"]["fcorrection"]
    # stage A keeps the weights of its lowest noisy-validation loss (read back on --resume)
    best = min(stage_a, key=lambda r: r["val_noisy_loss"])
    assert info["stage_a_best_epoch"] == best["epoch"]
    assert info["stage_a_val_noisy_accuracy"] == pytest.approx(best["val_noisy_accuracy"])
    stage_c = read_jsonl(_out(run, "fcorrection", "log.jsonl"))
    assert summaries["fcorrection"]["lowest_val_loss_epoch"]["epoch"] == min(
        stage_c, key=lambda r: r["val_noisy_loss"])["epoch"]
    with np.load(_out(run, "fcorrection", "transition_matrix.npz")) as g, \
            np.load(_out(ref, "fcorrection", "transition_matrix.npz")) as w:
        np.testing.assert_allclose(g["estimated"], w["estimated"], atol=1e-12)
        np.testing.assert_allclose(g["true"], noise.transition_matrix("sym", 0.4, 10))
    assert summaries["fcorrection"]["fcorrection"]["validation_size"] == 20


def test_skip_existing_list_runs_and_the_launcher_take_the_new_methods(
        resumed_and_uninterrupted, capsys):
    _, run, _, summaries = resumed_and_uninterrupted
    argv = E2E + ["--method", *NEW, "--results_dir", run]
    again = incv_train.main(incv_train.parse_args(argv + ["--skip_existing"]))
    assert {s["method"]: s["test_accuracy"] for s in again} == {
        m: summaries[m]["test_accuracy"] for m in NEW}
    rows = incv_train.main(incv_train.parse_args(argv + ["--seed", "0", "1", "--list_runs"]))
    assert [(r["method"], r["status"]) for r in rows] == [(m, "finished") for m in NEW] + [
        (m, "new") for m in NEW]
    capsys.readouterr()
    script_args, launcher_rows = slurm.grid_rows("incv_train.py", argv + ["--seed", "0", "1"])
    assert [r["method"] for r in launcher_rows] == NEW * 2
    assert slurm.main(slurm.parse_args(["--dry_run", "incv_train.py", *argv])) is None
    assert "nothing to submit: 4 of 4 runs of the grid are finished" in capsys.readouterr().out
    slurm.main(slurm.parse_args(["--dry_run", "incv_train.py", *argv, "--seed", "0", "1"]))
    out = capsys.readouterr().out
    assert "--method fcorrection decoupling mentornet d2l" in out
    assert "nothing submitted (1 tasks, 4 runs to do)" in out


def test_self_paced_variant_end_to_end_follows_the_forget_rate_ramp(tmp_path):
    """--mentornet_variant self_paced with --forget_rate 0.4 over 2 epochs (Tk 10 of 200 ->
    0.1): epoch 1 keeps every sample, epoch 2 floor(0.6 B) of each batch (128, 72)."""
    (s,) = incv_train.main(incv_train.parse_args(E2E[:6] + [
        "--epochs", "2", "--noise_pattern", "sym", "--noisy_ratio", "0.4", "--verbose", "0",
        "--method", "mentornet", "--mentornet_variant", "self_paced", "--forget_rate", "0.4",
        "--results_dir", str(tmp_path)]))
    log = read_jsonl(os.path.join(tmp_path, "digits", "sym", "0.4", "mentornet", "seed0",
                                  "log.jsonl"))
    assert [r["weight"] for r in log] == pytest.approx([1.0, (76 + 43) / 200])
    assert s["forget_rate"] == 0.4 and "mentornet" not in s


def test_mean_lid_joins_a_last_batch_of_one_point_to_the_one_before():
    """129 points in batches of 128: the lone last point has no neighbour (k = 0, NaN);
    it joins the first batch, so the mean is finite and equals the 129-point batch's."""
    x = np.random.default_rng(0).normal(size=(129, 4))
    got = d2l.mean_lid(x, batch=128)
    assert np.isfinite(got)
    assert got == pytest.approx(float(d2l.lid_mle(x).mean()))


def test_fcorrection_split_keeps_an_image_on_each_side():
    train, val = fcorrection.split(40, fraction=0.1, seed=0)
    assert len(val) == 4 and len(train) == 36 and not set(train) & set(val)
    with pytest.raises(ValueError, match="--fcorrection_val_split"):
        fcorrection.split(4, fraction=0.1, seed=0)
