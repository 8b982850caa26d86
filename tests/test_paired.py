"""INCV's two runs side by side (paired.PairedNetworks) against the two sequential runs."""

import json

import keras
import numpy as np
import pytest

from noisylabels import models, paired, training

SHAPE, C, BATCH, EPOCHS = (8, 8, 1), 4, 16, 2


def _data(n, seed):
    rng = np.random.default_rng(seed)
    return (rng.random((n,) + SHAPE, dtype=np.float32), rng.integers(0, C, n))


def _schedule():  # a drop after the first epoch: the lr schedule reaches both optimizers
    return training.PiecewiseLR(1e-3, (0,), (0.5,), paper_epochs=EPOCHS, epochs=EPOCHS)


def _parts(n1, n2):
    x1, y1 = _data(n1, 1)
    x2, y2 = _data(n2, 2)
    xh1, yh1 = _data(24, 3)
    xh2, yh2 = _data(25, 4)
    return [(x1, y1, xh1, yh1, yh1), (x2, y2, xh2, yh2, None)]


def _sequential(parts, initial, tmp_path):
    model = training.compile_classifier(models.build_model("cnn", SHAPE, C))
    out = []
    for k, (xf, yf, xh, yh, yt) in enumerate(parts):
        probs, info = training.train_and_predict(
            model, initial, xf, yf, xh, yh, epochs=EPOCHS, batch_size=BATCH,
            schedule=_schedule(), augment="none", seed=5, keep_best=True, y_held_true=yt,
            log_path=str(tmp_path / "seq.jsonl"), log_extra={"run": f"half{k + 1}"},
            verbose=0)
        out.append((probs, info, model.get_weights()))
    return out


def _paired(parts, initial, tmp_path):
    pair = paired.PairedNetworks(models.build_model("cnn", SHAPE, C),
                                   models.build_model("cnn", SHAPE, C))
    pair.compile(optimizer1=training.adam(1e-3), optimizer2=training.adam(1e-3))  # as INCV
    probs, infos = paired.train_pair_and_predict(
        pair, initial, parts, epochs=EPOCHS, batch_size=BATCH, schedule=_schedule(),
        augment="none", seed=5, keep_best=True, log_path=str(tmp_path / "pair.jsonl"),
        log_extras=({"run": "half1"}, {"run": "half2"}), verbose=0)
    return pair, [(probs[k], infos[k], net.get_weights())
                  for k, net in enumerate((pair.net1, pair.net2))]


def _close(a, b):
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def initial():
    keras.utils.set_random_seed(0)
    return models.build_model("cnn", SHAPE, C).get_weights()


def test_side_by_side_equals_two_sequential_runs(initial, tmp_path):
    """Equal training sizes: the same batches per side, so the same weights, best epochs,
    held-out probabilities and log rows as two sequential runs, up to rounding order."""
    parts = _parts(40, 40)  # 3 steps per epoch, the last one partial (8 samples)
    seq = _sequential(parts, initial, tmp_path)
    _, par = _paired(parts, initial, tmp_path)
    for (p_s, i_s, w_s), (p_p, i_p, w_p) in zip(seq, par):
        assert not np.allclose(w_s[0], initial[0])  # it trained
        _close(w_s, w_p)  # every weight, BatchNorm moving statistics included
        np.testing.assert_allclose(p_s, p_p, rtol=1e-4, atol=1e-5)
        assert i_s["best_epoch"] == i_p["best_epoch"]
    rows = {name: [json.loads(line) for line in open(tmp_path / f"{name}.jsonl")]
            for name in ("seq", "pair")}
    key = lambda r: (r["run"], r["epoch"])  # noqa: E731
    for s, p in zip(sorted(rows["seq"], key=key), sorted(rows["pair"], key=key)):
        assert key(s) == key(p) and s["lr"] == p["lr"]
        for name in ("loss", "accuracy", "val_noisy_accuracy"):
            assert s[name] == pytest.approx(p[name], rel=1e-4, abs=1e-5), name
    assert "val_acc_clean_labels" in rows["pair"][0] or "val_acc_clean_labels" in rows["pair"][1]


def test_unequal_sizes_cycle_the_smaller_side(initial, tmp_path):
    """n1 = 32, n2 = 33, batch 16: an epoch is 3 steps; side 1 (2 batches a pass) cycles
    into its next shuffled pass, side 2 is exactly its sequential run."""
    parts = _parts(32, 33)
    seq = _sequential(parts, initial, tmp_path)
    pair, par = _paired(parts, initial, tmp_path)
    # 3 steps per epoch on both sides; keep_best restores each run's best epoch with its
    # optimizer state, as the authors' load_model did, so the step count is that epoch's.
    for opt, (_, info, _) in zip((pair.optimizer1, pair.optimizer2), par):
        assert int(opt.iterations) == 3 * info["best_epoch"]
    _close(seq[1][2], par[1][2])
    assert not np.allclose(seq[0][2][0], par[0][2][0])  # side 1 made one step more per epoch


def test_pair_rejects_shared_networks():
    net = models.build_model("cnn", SHAPE, C)
    with pytest.raises(ValueError, match="two different networks"):
        paired.PairedNetworks(net, net)
