"""The rules of arXiv:1905.05040 that decide the paper's numbers, pinned through the real code.

Each test here fails when a rule is changed: the modified Co-teaching schedule (forget-rate
ramp, Tk, warm-up, C batch size, e_S, the keep count logged per epoch, the lr drops), INCV's
best-checkpoint rule and common initial weights, resume at epoch level, the augmentation
(+-4/32 shift, horizontal flip, nearest fill), the CIFAR uint8 -> /255 pixel path, the scripts'
schedule constants, and the closed forms of sec. 2 against predictions drawn from T.
"""

import os

import keras
import numpy as np
import pytest
from conftest import lp_lr, read_jsonl, tiny_classifier, write_cifar

from noisylabels import (
    coteaching,
    data,
    flags,
    incv,
    incv_train,
    models,
    noise,
    noisy_cv,
    pipelines,
    training,
)

# ------------------------------------------------------------------ schedule constants


def _lrs(boundaries, factors, paper_epochs, epochs, at):
    s = training.PiecewiseLR(1e-3, boundaries, factors, paper_epochs=paper_epochs, epochs=epochs)
    return [s(e) for e in at]


def test_theory_run_lr_drops_after_epochs_80_120_160_180():
    # The authors' lr_schedule(epoch), 0-based: x0.1 once epoch > 80, ... x0.0005 once > 180.
    at = (0, 80, 81, 120, 121, 160, 161, 180, 181, 199)
    assert _lrs(noisy_cv.LR_BOUNDARIES, noisy_cv.LR_FACTORS, noisy_cv.PAPER_EPOCHS, 200,
                at) == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5, 1e-6, 1e-6, 5e-7, 5e-7],
                                     rel=1e-12)
    assert noisy_cv.PAPER_EPOCHS == 200


def test_incv_runs_lr_drops_after_epochs_20_30_40_of_50():
    at = (0, 20, 21, 30, 31, 40, 41, 49)
    assert _lrs(incv.INCV_BOUNDARIES, incv.INCV_FACTORS, incv.PAPER_INCV_EPOCHS, 50,
                at) == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4, 1e-4, 1e-4],
                                     rel=1e-12)
    assert incv.PAPER_INCV_EPOCHS == 50


def test_coteaching_lr_drops_at_0_based_epochs_80_120_160_180():
    at = (0, 79, 80, 119, 120, 159, 160, 179, 180, 199)
    assert _lrs(coteaching.COT_BOUNDARIES, coteaching.COT_FACTORS, coteaching.PAPER_EPOCHS,
                200, at) == pytest.approx(
        [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5, 1e-6, 1e-6, 5e-7, 5e-7], rel=1e-12)


def test_scripts_and_modules_agree_on_constants():
    assert incv_train.PAPER_EPOCHS == coteaching.PAPER_EPOCHS == 200
    assert incv_train.PAPER_INCV_EPOCHS == incv.PAPER_INCV_EPOCHS == 50
    assert flags.ARCHS == models.MODEL_NAMES
    defaults = incv_train.parse_args([])
    assert (defaults.epochs, defaults.incv_epochs, defaults.tk, defaults.batch_size,
            defaults.lr, defaults.incv_iterations) == (200, 50, 10.0, 128, 1e-3, 4)
    assert noisy_cv.parse_args([]).epochs == 200


# -------------------------------------------------- modified Co-teaching: pure rules


@pytest.mark.parametrize("pattern, e, epochs, expected", [
    ("sym", 0.5, 200, 40), ("sym", 0.6, 200, 40), ("sym", 0.61, 200, 80), ("asym", 0.2, 200, 80),
    ("sym", 0.3, 50, 10), ("sym", 0.7, 50, 20), ("asym", 0.4, 50, 20), ("sym", 0.2, 20, 4)])
def test_warmup_epochs(pattern, e, epochs, expected):
    assert coteaching.warmup_epochs(pattern, e, epochs) == expected


@pytest.mark.parametrize("n_s, n_c, b, expected", [
    (25000, 10000, 128, 51),   # int(51.2): truncated, not rounded
    (25000, 12399, 128, 63),   # int(63.48...)
    (25000, 30000, 128, 64),   # capped at 128 // 2
    (40, 17, 16, 6),           # int(6.8)
    (40, 100, 15, 7),          # cap 15 // 2 = 7
    (40, 0, 16, 0), (0, 10, 16, 0)])
def test_c_batch_size(n_s, n_c, b, expected):
    assert coteaching.c_batch_size(n_s, n_c, b) == expected


def test_forget_rate_ramp_and_tk_scaling():
    # Paper: e_S * min(1, epoch / 10) over 200 epochs.
    paper = [coteaching.forget_rate_at(e, forget_rate=0.2, tk=10, epochs=200)
             for e in (0, 1, 5, 9, 10, 11, 150)]
    assert paper == pytest.approx([0.0, 0.02, 0.1, 0.18, 0.2, 0.2, 0.2], abs=1e-15)
    # --epochs 50: Tk = 10 * 50 / 200 = 2.5 epochs.
    short = [coteaching.forget_rate_at(e, forget_rate=0.4, tk=10, epochs=50) for e in range(5)]
    assert short == pytest.approx([0.0, 0.16, 0.32, 0.4, 0.4], abs=1e-15)


@pytest.mark.parametrize("e, pattern, c", [(0.5, "sym", 10), (0.2, "sym", 10), (0.8, "sym", 10),
                                            (0.4, "asym", 10), (0.3, "sym", 100)])
def test_expected_noise_of_selected_formula(e, pattern, c):
    k = c - 1 if pattern == "sym" else 1
    assert noise.expected_noise_of_selected(e, pattern, c) == pytest.approx(
        e**2 / (e**2 + k * (1 - e) ** 2), abs=1e-15)


# ------------------------------------ modified Co-teaching through train_two_networks

N_S, N_C, B, EPOCHS, TK, WARMUP, E_S = 40, 17, 16, 10, 50.0, 2, 0.5


def _tiny_data():
    rng = np.random.default_rng(0)
    x = rng.random((60, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 60)
    xt = rng.random((20, 8, 8, 1)).astype("float32")
    d = data.Data("tiny", x, y, xt, rng.integers(0, 3, 20), 3)
    y_noisy = y.copy()
    y_noisy[:10] = (y_noisy[:10] + 1) % 3
    return d, y_noisy


def _cot_args(**kw):
    a = dict(lr=1e-3, epochs=EPOCHS, tk=TK, devices="default", arch="cnn", batch_size=B,
             keep_optimizer_state=False, augment="none", verbose=0, resume=False)
    a.update(kw)
    return coteaching.CoTeachingConfig(**a)


def _train(out, *, die_after=None, resume=False, record=None):
    """train_two_networks on tiny data; optionally killed after 0-based epoch ``die_after``."""
    d, y_noisy = _tiny_data()
    mp = pytest.MonkeyPatch()
    try:
        if die_after is not None:
            real = training.EpochCheckpoint.on_epoch_end

            def die(self, epoch, logs=None):
                real(self, epoch, logs)
                if epoch == die_after:
                    raise KeyboardInterrupt  # killed after saving this epoch

            mp.setattr(training.EpochCheckpoint, "on_epoch_end", die)
        if record is not None:
            real_make, real_fit = coteaching.make_coteaching_dataset, coteaching.CoTeaching.fit
            made = {}

            def make(*args, c_batch_size, **kwargs):
                ds = real_make(*args, c_batch_size=c_batch_size, **kwargs)
                made[id(ds)] = c_batch_size
                record["c_batch_sizes"].append(c_batch_size)
                return ds

            def fit(self, ds, *args, **kwargs):
                record["fits"].append((kwargs["initial_epoch"], kwargs["epochs"], made[id(ds)]))
                return real_fit(self, ds, *args, **kwargs)

            mp.setattr(coteaching, "make_coteaching_dataset", make)
            mp.setattr(coteaching.CoTeaching, "fit", fit)
        try:
            coteaching.train_two_networks(
                _cot_args(resume=resume), d, y_noisy, np.arange(N_S), np.arange(N_S, N_S + N_C),
                seed=0, forget_rate=E_S, warmup=WARMUP, out=out, printer=lambda *a: None)
        except KeyboardInterrupt:
            pass
    finally:
        mp.undo()
    return read_jsonl(os.path.join(out, "log.jsonl")), np.load(os.path.join(out, "checkpoint.npz"))


@pytest.fixture(scope="module")
def cot_run(tmp_path_factory):
    record = {"c_batch_sizes": [], "fits": []}
    rows, ckpt = _train(str(tmp_path_factory.mktemp("cot")), record=record)
    return rows, {k: ckpt[k] for k in ckpt.files}, record


def test_coteaching_keep_count_follows_the_forget_rate_ramp(cot_run):
    rows, _, _ = cot_run
    tk = TK * EPOCHS / 200  # 2.5 epochs
    batches = [16, 16, 8]  # one pass over |S| = 40 in batches of 16
    expected = []
    for epoch in range(EPOCHS):
        r = E_S * min(1.0, epoch / tk)
        expected.append(np.mean([min(max(round(b * (1 - r)), 1), b) for b in batches]))
    # 0-based epochs 0, 1, 2, 3+: rates 0, 0.2, 0.4, 0.5 -> 13.33, 10.67, 8.33, 6.67
    assert [r["keep"] for r in rows] == pytest.approx(expected, rel=1e-6)
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))


def test_coteaching_lr_drops_scaled_to_epochs(cot_run):
    rows, _, _ = cot_run
    # 0-based drops at 80, 120, 160, 180 of 200 -> after 3.95, 5.95, 7.95, 8.95 of 10.
    assert [r["lr"] for r in rows] == pytest.approx(
        [1e-3] * 4 + [1e-4] * 2 + [1e-5] * 2 + [1e-6, 5e-7], rel=1e-6)


def test_coteaching_warmup_then_s_joined_by_c(cot_run):
    _, _, record = cot_run
    c_batch = min(int(N_C * B / N_S), B // 2)  # int(6.8) = 6
    assert record["c_batch_sizes"] == [0, c_batch]
    # S alone for 0-based epochs 0..WARMUP, then S + C batches up to the end.
    assert record["fits"] == [(0, WARMUP + 1, 0), (WARMUP + 1, EPOCHS, c_batch)]


@pytest.mark.parametrize("die_after", [WARMUP, WARMUP + 2, 1])  # + inside each phase
def test_resumed_coteaching_equals_uninterrupted(cot_run, tmp_path, die_after):
    """Killed after 0-based epoch ``die_after`` and resumed: the same weights and test
    accuracies as the uninterrupted run (after the warm-up's last epoch, and inside the
    S + C phase). Neither resumes at an lr drop, where Adam is reset anyway: the restored
    optimizer state matters."""
    rows, ckpt, _ = cot_run
    out = str(tmp_path)
    part, _ = _train(out, die_after=die_after)
    assert [r["epoch"] for r in part] == list(range(1, die_after + 2))
    resumed, ckpt2 = _train(out, resume=True)
    assert [r["epoch"] for r in resumed] == list(range(1, EPOCHS + 1))
    for key in ("test_accuracy_model1", "test_accuracy_model2", "keep", "lr"):
        assert [r[key] for r in resumed] == pytest.approx([r[key] for r in rows], abs=1e-6), key
    for k in ckpt:
        np.testing.assert_allclose(ckpt2[k], ckpt[k], atol=1e-5, err_msg=k)


# --------------------------------------------- incv_train.run_one: e_S and warm-up wiring


class _RecordingLR(training.PiecewiseLR):
    """training.PiecewiseLR that remembers how each script built its schedule."""

    made = []

    def __init__(self, base, boundaries, factors, *, paper_epochs, epochs):
        super().__init__(base, boundaries, factors, paper_epochs=paper_epochs, epochs=epochs)
        _RecordingLR.made.append((base, tuple(boundaries), tuple(factors), paper_epochs, epochs))


def _paper_lrs(made, at):
    """The lr of a recorded schedule at the paper's epochs (its own paper_epochs)."""
    base, boundaries, factors, paper_epochs, _ = made
    return _lrs(boundaries, factors, paper_epochs, paper_epochs, at)


@pytest.mark.parametrize("pattern, e, epochs, warmup", [
    ("sym", 0.5, 200, 40), ("sym", 0.65, 200, 80), ("asym", 0.3, 200, 80), ("sym", 0.6, 50, 10),
    ("sym", 0.7, 50, 20)])
def test_run_one_passes_e_s_and_warmup_from_the_estimate(tmp_path, monkeypatch, pattern, e,
                                                         epochs, warmup):
    rng = np.random.default_rng(1)
    n, c = 40, 10
    d = data.Data("tiny", rng.random((n, 8, 8, 1)).astype("float32"), np.arange(n) % c,
                  rng.random((10, 8, 8, 1)).astype("float32"), np.arange(10) % c, c)
    selected = np.arange(n) < 25
    candidate = (np.arange(n) >= 25) & (np.arange(n) < 37)
    state = {"selected": selected, "candidate": candidate, "eval_ratio": e, "iterations": [],
             "heldout_loss": np.full(n, np.nan), "oos_probs": None}
    calls = []
    monkeypatch.setattr(incv, "incv_select", lambda *a, **k: state)
    monkeypatch.setattr(coteaching, "train_two_networks", lambda *a, **k: calls.append((a, k)) or [
        {"epoch": 1, "test_accuracy_model1": 0.5, "test_accuracy_model2": 0.25}])
    monkeypatch.setattr(training, "PiecewiseLR", _RecordingLR)
    _RecordingLR.made.clear()
    args = incv_train.parse_args(["--dataset", "digits", "--arch", "cnn", "--epochs", str(epochs),
                                  "--noise_pattern", pattern, "--results_dir", str(tmp_path),
                                  "--verbose", "0"])
    out = str(tmp_path / "run")
    os.makedirs(out)
    s = incv_train.run_one(args, d, "incv", pattern, 0.5, 0, out, lambda *a: None)
    (a, k), = calls
    kk = c - 1 if pattern == "sym" else 1
    e_s = e**2 / (e**2 + kk * (1 - e) ** 2)
    assert k["forget_rate"] == pytest.approx(e_s, abs=1e-15) and k["warmup"] == warmup
    assert s["forget_rate"] == k["forget_rate"] and s["warmup_epochs"] == warmup
    assert np.array_equal(a[3], np.flatnonzero(selected)) and np.array_equal(
        a[4], np.flatnonzero(candidate))
    assert s["test_accuracy"] == {"model1": 0.5, "model2": 0.25, "mean": 0.375}
    # INCV's training runs: drops after 20, 30, 40 of the paper's 50 epochs.
    (incv_lr,) = _RecordingLR.made
    assert incv_lr[3:] == (50, 50)
    assert _paper_lrs(incv_lr, (20, 21, 30, 31, 40, 41)) == pytest.approx(
        [1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4, 1e-4], rel=1e-12)


# ---------------------------------------------------------------------------- INCV runs


def test_every_incv_run_starts_from_the_same_weights_with_a_fresh_optimizer(tmp_path,
                                                                            monkeypatch):
    rng = np.random.default_rng(2)
    n = 48
    d = data.Data("tiny", rng.random((n, 8, 8, 1)).astype("float32"), np.arange(n) % 3,
                  rng.random((6, 8, 8, 1)).astype("float32"), np.arange(6) % 3, 3)
    starts, ends = [], []

    def snapshot(model):
        return ([w.copy() for w in model.get_weights()],
                [keras.ops.convert_to_numpy(v).copy() for v in model.optimizer.variables
                 if "learning_rate" not in v.path])

    monkeypatch.setattr(training.HeldOutMonitor, "on_train_begin", lambda self, logs=None: (
        starts.append(snapshot(self.model) + (self.keep_best,))), raising=False)
    monkeypatch.setattr(training.HeldOutMonitor, "on_train_end", lambda self, logs=None: (
        ends.append(snapshot(self.model))))
    args = incv_train.parse_args(["--dataset", "digits", "--arch", "cnn", "--incv_epochs", "2",
                                  "--batch_size", "16", "--verbose", "0"])
    train_fn = incv.make_incv_train_fn(incv_train.incv_config(args), d, d.y_train, seed=0,
                                       out=str(tmp_path),
                                       printer=lambda *a: None)
    idx = np.arange(n)
    train_fn(idx[:24], idx[24:], True, "run1")
    train_fn(idx[24:], idx[:24], False, "run2")
    (w1, o1, best1), (w2, o2, best2) = starts
    assert (best1, best2) == (True, False)  # keep_best reaches the held-out monitor
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)
    assert all(not v.any() for v in o1 + o2)  # Adam's step count and moments start at 0
    # Set-up check: run 1 moved the weights and Adam's state.
    assert max(float(np.abs(a - b).max()) for a, b in zip(ends[0][0], w1)) > 1e-3
    assert any(v.any() for v in ends[0][1])


def test_best_checkpoint_is_restored_only_with_keep_best():
    rng = np.random.default_rng(3)
    w_true = rng.normal(size=(4, 3))
    x = rng.normal(size=(200, 4)).astype("float32")
    y = (x @ w_true).argmax(1)
    x_fit, y_fit, x_held, y_held = x[:120], y[:120], x[120:], y[120:]
    epochs, per_epoch = 4, []

    class Wreck(keras.callbacks.Callback):
        """Epoch 4 (lr 0) starts from zero weights: uniform outputs, the worst epoch."""

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == epochs - 1:
                self.model.set_weights([np.zeros_like(w) for w in self.model.get_weights()])

        def on_epoch_end(self, epoch, logs=None):
            per_epoch.append((logs["val_noisy_accuracy"], self.model.get_weights()))

    results = {}
    for keep_best in (True, False):
        per_epoch.clear()
        model = tiny_classifier(n_in=4, n_out=3, lr=0.05)
        probs, info = training.train_and_predict(
            model, model.get_weights(), x_fit, y_fit, x_held, y_held, epochs=epochs,
            batch_size=30, schedule=lambda e, lr=None: 0.05 if e < epochs - 1 else 0.0,
            keep_best=keep_best, verbose=0, callbacks=[Wreck()])
        results[keep_best] = (probs, info, list(per_epoch))
    probs, info, history = results[True]
    accs = [a for a, _ in history]
    best = int(np.argmax(accs))  # first epoch with the best held-out noisy accuracy
    assert accs[-1] < max(accs) - 0.2  # set-up: the last epoch is clearly not the best
    assert info["best_epoch"] == best + 1
    ref = tiny_classifier(n_in=4, n_out=3)
    ref.set_weights(history[best][1])
    np.testing.assert_allclose(probs, ref.predict(x_held, verbose=0), atol=1e-6)
    probs_last, info_last, _ = results[False]
    assert info_last["best_epoch"] is None
    np.testing.assert_allclose(probs_last, np.full_like(probs_last, 1 / 3), atol=1e-6)


def test_held_out_monitor_keeps_the_first_of_equal_bests():
    # Constant predictors (zero kernel, one-hot bias): accuracy = share of that label.
    y = np.array([0] * 5 + [1] * 8 + [2] * 8 + [3] * 3)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, activation="softmax")])
    training.compile_classifier(model)  # the monitor keeps the best epoch's optimizer too
    model.optimizer.build(model.trainable_variables)
    monitor = training.HeldOutMonitor(np.zeros((len(y), 2), "float32"), y, keep_best=True)
    monitor.set_model(model)
    for epoch, cls in enumerate([0, 1, 2, 3]):  # accuracies 5/24, 8/24, 8/24 (tie), 3/24
        model.set_weights([np.zeros((2, 4), "float32"), 5 * np.eye(4, dtype="float32")[cls]])
        monitor.on_epoch_end(epoch, {})
    monitor.on_train_end()
    assert monitor.best_epoch == 1 and monitor.best == pytest.approx(8 / 24)
    np.testing.assert_array_equal(model.get_weights()[1], 5 * np.eye(4, dtype="float32")[1])


# ------------------------------------------------------------------------- augmentation


def test_standard_augmentation_is_a_bounded_shift_with_nearest_fill_and_left_right_flip():
    n, size = 96, 32
    ramp = np.arange(size, dtype="float32") + 10  # + 10: a zero ("constant") fill would show
    x = np.zeros((n, size, size, 2), "float32")
    x[..., 0] = ramp[None, None, :]  # varies along the width only
    x[..., 1] = ramp[None, :, None]  # varies along the height only
    out = keras.ops.convert_to_numpy(pipelines.make_augmenter("standard", seed=5)(x, training=True))
    j = np.arange(size)
    shifts, flips = {"h": [], "v": []}, 0
    for img in out:
        across, down = img[..., 0], img[..., 1]
        # A vertical shift leaves the width ramp alone, and vice versa (nearest fill).
        assert np.abs(across - across[:1]).max() < 1e-4
        assert np.abs(down - down[:, :1]).max() < 1e-4
        row, col = across[0], down[:, 0]
        assert col[-1] > col[0]  # never flipped upside down
        if row[-1] < row[0]:  # flipped left-right
            flips += 1
            row = row[::-1]
        for profile, key in ((row, "h"), (col, "v")):
            inner = (profile > 10 + 1e-3) & (profile < 10 + size - 1 - 1e-3)
            t = float(np.mean(j[inner] + 10 - profile[inner]))
            # A shift by t pixels with the border pixel repeated (edge replication).
            np.testing.assert_allclose(profile, 10 + np.clip(j - t, 0, size - 1), atol=1e-3)
            shifts[key].append(t)
    for key in ("h", "v"):
        t = np.abs(shifts[key])
        assert t.max() <= 0.125 * size + 1e-4  # at most 4 of 32 pixels
        assert t.max() > 0.1 * size  # and up to it: 0.1 or 1/16 would be caught
    assert 0.3 * n < flips < 0.7 * n  # horizontal flip with probability 1/2


def test_cifar_uint8_pixels_reach_the_model_as_x_over_255(tmp_path):
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    written = write_cifar(str(tmp_path / "cifar-10-batches-py"), names, b"labels", 4, 10)
    d = data.load_dataset("cifar10", data_dir=str(tmp_path), download=False)
    raw = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    expected = raw.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float32) / 255
    ds = pipelines.make_train_dataset(d.x_train, d.y_train, batch_size=20, augment="none",
                                 shuffle=False)
    (xb, yb), = list(ds)
    np.testing.assert_array_equal(xb.numpy(), expected)  # bit for bit
    assert yb.numpy().tolist() == sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])


def test_noisy_cv_trains_with_standard_augmentation_on_cifar_files(tmp_path, monkeypatch):
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    written = write_cifar(str(tmp_path / "cifar-10-batches-py"), names, b"labels", 8, 10)
    raw = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    pixels = raw.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float32) / 255
    kinds, fed = [], []
    real_aug, real_ds = pipelines.make_augmenter, training.make_train_dataset
    monkeypatch.setattr(pipelines, "make_augmenter", lambda kind, **k: kinds.append(kind) or real_aug(
        kind, **k))
    monkeypatch.setattr(training, "make_train_dataset", lambda x, y, **k: fed.append(
        (x.copy(), k["augment"])) or real_ds(x, y, **k))
    monkeypatch.setattr(training, "PiecewiseLR", _RecordingLR)
    _RecordingLR.made.clear()
    results = str(tmp_path / "results")
    args = noisy_cv.parse_args(["--dataset", "cifar10", "--data_dir", str(tmp_path),
                                "--no_download", "--arch", "cnn", "--epochs", "2",
                                "--batch_size", "8", "--noise_ratio", "0.2",
                                "--results_dir", results, "--verbose", "0"])
    (s,) = noisy_cv.main(args)
    assert kinds == ["standard"] and [a for _, a in fed] == ["standard"]
    idx_fit = np.load(os.path.join(results, "cifar10", "sym", "0.2", "seed0",
                                   "labels.npz"))["idx_fit"]
    np.testing.assert_array_equal(fed[0][0], pixels[idx_fit])  # uint8 / 255, nothing else
    assert s["n_train"] == 40 and np.isfinite(s["noisy_accuracy"])
    # The theory run's schedule at the paper's 200 epochs: drops after 80, 120, 160, 180.
    (made,) = _RecordingLR.made
    assert made[3:] == (200, 2)
    assert _paper_lrs(made, (80, 81, 120, 121, 160, 161, 180, 181)) == pytest.approx(
        [1e-3, 1e-4, 1e-4, 1e-5, 1e-5, 1e-6, 1e-6, 5e-7], rel=1e-12)


# ------------------------------------------------------- theory against measurement


def _draw(T, y, rng):
    """One label per row from T[y] (inverse CDF)."""
    cdf = np.cumsum(T, axis=1)[y]
    return np.minimum((rng.random(len(y))[:, None] > cdf).sum(1), T.shape[0] - 1)


@pytest.mark.parametrize("pattern, e", [("sym", 0.2), ("sym", 0.5), ("sym", 0.8),
                                        ("asym", 0.2), ("asym", 0.4)])
def test_summarize_measures_the_closed_forms_on_predictions_drawn_from_T(pattern, e):
    c, n = 10, 200_000
    rng = np.random.default_rng(7)
    T = noise.transition_matrix(pattern, e, c)
    y_true = rng.integers(0, c, n)
    y_noisy, pred = _draw(T, y_true, rng), _draw(T, y_true, rng)  # independent draws
    s = noisy_cv.summarize(y_true=y_true, y_noisy=y_noisy, idx_held=np.arange(n),
                           probs=np.eye(c, dtype=np.float32)[pred],
                           test_probs=np.eye(c)[:2], y_test=np.array([0, 1]), pattern=pattern,
                           ratio=e, num_classes=c)
    # Closed forms (sec. 2): acc = (1-e)^2 + e^2/(c-1) (sym) or (1-e)^2 + e^2 (asym),
    # LP = (1-e)^2 / acc, LR = 1 - e.
    acc = (1 - e) ** 2 + (e**2 / (c - 1) if pattern == "sym" else e**2)
    lp, lr = (1 - e) ** 2 / acc, 1 - e
    theory = s["theory"]
    assert (theory["accuracy"], theory["label_precision"], theory["label_recall"]) == \
        pytest.approx((acc, lp, lr), abs=2e-4)  # the empirical prior is not exactly uniform
    sd = np.sqrt(acc * (1 - acc) / n)
    assert abs(s["noisy_accuracy"] - acc) < 5 * sd
    assert s["label_precision"] == pytest.approx(lp, abs=5 * np.sqrt(lp * (1 - lp) / (n * acc)))
    assert s["label_recall"] == pytest.approx(lr, abs=5 * np.sqrt(lr * (1 - lr) / (n * (1 - e))))
    assert (s["label_precision"], s["label_recall"]) == pytest.approx(
        lp_lr(y_true, y_noisy, pred == y_noisy), abs=1e-12)
    assert s["test_accuracy"] == 1.0 and s["n_held_out"] == n
