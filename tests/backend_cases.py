"""The method-pinning checks, written once for every Keras backend (no TensorFlow call).

Keras picks its backend once per process, so tests/test_backends.py runs this file in a
child per backend: ``KERAS_BACKEND=jax python -m pytest tests/backend_cases.py``. (Its name
does not start with ``test_``: the main run collects it only through that child.)
The networks are Input(4) -> Dense(3, softmax): every loss, pick and SGD update can be
recomputed with numpy (as tests/test_coteaching.py does on TensorFlow).
"""

import sys

import keras
import numpy as np
import pytest

from noisylabels import pipelines
from noisylabels.backend_steps import small_loss_mask
from noisylabels.coteaching import CoTeaching
from noisylabels.paired import PairedNetworks

N_IN, N_CLS, LR = 4, 3, 0.1


def _net(rng, l2=0.0):
    inp = keras.Input(shape=(N_IN,), name="image")
    reg = keras.regularizers.L2(l2) if l2 else None
    net = keras.Model(inp, keras.layers.Dense(N_CLS, activation="softmax",
                                              kernel_regularizer=reg)(inp))
    net.set_weights([rng.normal(0, 1.0, (N_IN, N_CLS)).astype("float32"),
                     rng.normal(0, 0.5, (N_CLS,)).astype("float32")])
    return net


def _np_probs(w, c, x):
    z = x.astype(np.float64) @ w + c
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _weights(net):
    return [np.asarray(v, np.float64) for v in net.get_weights()]


def test_backend_is_the_one_asked_for():
    import os

    assert keras.backend.backend() == os.environ["KERAS_BACKEND"]
    if keras.backend.backend() != "tensorflow":
        assert "tensorflow" not in sys.modules


def test_small_loss_mask_is_top_k_with_ties_to_the_lower_index():
    loss = np.array([0.5, 0.2, 0.5, 0.2, 0.9, 0.5, 0.1], np.float32)
    for keep in range(len(loss) + 1):
        got = np.asarray(keras.ops.convert_to_numpy(small_loss_mask(loss, keep)))
        want = np.zeros(len(loss), bool)
        want[np.argsort(loss, kind="stable")[:keep]] = True
        assert (got == want).all(), keep


@pytest.mark.parametrize("b,n_s,r,l2", [(12, 12, 0.25, 0.0), (15, 15, 0.1, 0.01),
                                        (10, 6, 0.5, 0.0), (8, 0, 0.3, 0.0)])
def test_coteaching_step_is_the_hand_computed_exchange(b, n_s, r, l2):
    rng = np.random.RandomState(b + n_s)
    model = CoTeaching(_net(rng, l2), _net(rng, l2))
    model.compile(keras.optimizers.SGD(LR), keras.optimizers.SGD(LR))
    model.forget_rate.assign(r)
    # Inputs small enough that no probability falls below 1e-7: on JAX and PyTorch Keras'
    # cross-entropy clips the softmax probabilities there (TensorFlow's uses the logits).
    x = rng.normal(0, 0.5, (b, N_IN)).astype("float32")
    y = rng.randint(0, N_CLS, b).astype("int32")
    from_s = (np.arange(b) < n_s).astype("float32")
    clean = rng.randint(0, 2, b).astype("float32")
    (w1, c1), (w2, c2) = _weights(model.net1), _weights(model.net2)
    logs = model.train_on_batch({"image": x, "from_s": from_s, "clean": clean}, y,
                                return_dict=True)
    keep = 0 if n_s == 0 else min(max(round(n_s * (1 - r)), 1), b)  # Python's round
    assert logs["keep"] == keep
    ce = [-np.log(_np_probs(w, c, x)[np.arange(b), y]) for w, c in ((w1, c1), (w2, c2))]
    picks = [np.argsort(e, kind="stable")[:keep] for e in ce]
    for (w, c), peer, net in (((w1, c1), picks[1], model.net1),
                              ((w2, c2), picks[0], model.net2)):
        if keep:
            d = _np_probs(w, c, x[peer]) - np.eye(N_CLS)[y[peer]]
            gw = x[peer].T.astype(np.float64) @ d / keep + 2 * l2 * w
            gc = d.mean(axis=0)
        else:
            gw, gc = 2 * l2 * w, np.zeros_like(c)
        nw, nc = _weights(net)
        np.testing.assert_allclose(nw, w - LR * gw, atol=2e-5)
        np.testing.assert_allclose(nc, c - LR * gc, atol=2e-5)
    if keep:
        np.testing.assert_allclose(logs["kept_clean1"], clean[picks[0]].mean(), atol=1e-6)
        np.testing.assert_allclose(logs["loss1"], ce[0][picks[1]].mean(), rtol=1e-5)


def test_keep_count_at_exact_ties_follows_python_round():
    rng = np.random.RandomState(0)
    model = CoTeaching(_net(rng), _net(rng))
    model.compile(keras.optimizers.SGD(LR), keras.optimizers.SGD(LR))
    for b_s, r in ((15, 0.1), (5, 0.1), (25, 0.3), (45, 0.1)):
        model.forget_rate.assign(r)
        x = rng.normal(size=(b_s, N_IN)).astype("float32")
        logs = model.train_on_batch(x, np.zeros(b_s, "int32"), return_dict=True)
        assert logs["keep"] == round(b_s * (1 - r)), (b_s, r)


def _pair_vs_sequential(epochs=2, n=40, batch=16):
    rng = np.random.RandomState(3)
    x = rng.normal(size=(2 * n, N_IN)).astype("float32")
    y = rng.randint(0, N_CLS, 2 * n).astype("int32")
    init = _net(np.random.RandomState(9)).get_weights()
    nets = [_net(rng) for _ in range(2)]
    pair = PairedNetworks(*nets)
    pair.compile(keras.optimizers.Adam(1e-2), keras.optimizers.Adam(1e-2))
    for net in nets:
        net.set_weights(init)
    ds = pipelines.make_paired_dataset(x[:n], y[:n], x[n:], y[n:], batch_size=batch, seed=5)
    pair.fit(ds, epochs=epochs, verbose=0, shuffle=False, callbacks=pipelines.epoch_callbacks(ds))
    single = []
    for part in (slice(0, n), slice(n, 2 * n)):
        net = _net(rng)
        net.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
        net.set_weights(init)
        ds1 = pipelines.make_train_dataset(x[part], y[part], batch_size=batch, seed=5)
        net.fit(ds1, epochs=epochs, verbose=0, shuffle=False,
                callbacks=pipelines.epoch_callbacks(ds1))
        single.append(net.get_weights())
    return [n.get_weights() for n in nets], single


def test_paired_networks_equal_two_sequential_runs():
    paired, single = _pair_vs_sequential()
    for a, b in zip(paired, single):
        for u, v in zip(a, b):
            np.testing.assert_allclose(u, v, atol=1e-5)


def test_numpy_pipeline_resumed_equals_uninterrupted_with_augmentation():
    rng = np.random.default_rng(0)
    x = rng.random((37, 8, 8, 3), dtype=np.float32)
    y = np.arange(37) % 3
    for make in (
        lambda first: pipelines.make_train_dataset(
            x, y, batch_size=8, augment="standard", seed=4, first_epoch=first,
            pipeline="numpy"),
        lambda first: pipelines.make_coteaching_dataset(
            x, y, np.ones(37, bool), np.arange(25), np.arange(25, 37), batch_size=8,
            c_batch_size=3, augment="standard", seed=4, first_epoch=first,
            pipeline="numpy")):
        full, resumed = make(0), make(2)
        full.epoch = 2
        for i in range(len(full)):
            a, b = full[i], resumed[i]
            xa = a[0]["image"] if isinstance(a[0], dict) else a[0]
            xb = b[0]["image"] if isinstance(b[0], dict) else b[0]
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(a[1], b[1])
        full.epoch = 1
        assert not np.array_equal(full[0][1], resumed[0][1]) or \
            not np.array_equal(full[0][0] if not isinstance(full[0][0], dict)
                               else full[0][0]["image"],
                               resumed[0][0] if not isinstance(resumed[0][0], dict)
                               else resumed[0][0]["image"])


def test_coteaching_fit_resumed_equals_uninterrupted():
    rng = np.random.RandomState(1)
    x = rng.normal(size=(30, N_IN)).astype("float32")
    y = rng.randint(0, N_CLS, 30).astype("int32")
    s_idx, c_idx = np.arange(20), np.arange(20, 30)

    def model_and_data(first):
        r = np.random.RandomState(7)
        m = CoTeaching(_net(r), _net(r))
        m.compile(keras.optimizers.Adam(1e-2), keras.optimizers.Adam(1e-2))
        m.forget_rate.assign(0.2)
        ds = pipelines.make_coteaching_dataset(x, y, np.ones(30, bool), s_idx, c_idx,
                                               batch_size=8, c_batch_size=3, seed=2,
                                               first_epoch=first)
        return m, ds

    m, ds = model_and_data(0)
    m.fit(ds, epochs=3, verbose=0, shuffle=False, callbacks=pipelines.epoch_callbacks(ds))
    m2, ds2 = model_and_data(0)
    m2.fit(ds2, epochs=1, verbose=0, shuffle=False, callbacks=pipelines.epoch_callbacks(ds2))
    weights = m2.get_weights()
    opt_state = [[keras.ops.convert_to_numpy(v) for v in o.variables]
                 for o in (m2.optimizer1, m2.optimizer2)]
    m3, ds3 = model_and_data(1)  # a new process: restore weights and optimizer slots
    m3.set_weights(weights)
    for o, vals in zip((m3.optimizer1, m3.optimizer2), opt_state):
        for v, val in zip(o.variables, vals):
            v.assign(val)
    m3.fit(ds3, epochs=3, initial_epoch=1, verbose=0, shuffle=False,
           callbacks=pipelines.epoch_callbacks(ds3))
    for a, b in zip(m.get_weights(), m3.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_augmentation_bounds_shift_up_to_4_of_32_and_flip():
    h = w = 32
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32),
                             indexing="ij")
    img = np.stack([rows, cols, cols[:, ::-1].copy()], -1)[None].repeat(64, 0)
    out = pipelines.augment_batch(img, "standard", np.random.default_rng(0))
    # Inside the image a shift by d leaves rows - d / cols - d; flips mirror the columns.
    dy = rows[8, 8] - out[:, 8, 8, 0]
    assert np.abs(dy).max() <= 4.0 + 1e-5 and np.abs(dy).max() > 2.0
    flipped = out[:, 8, 9, 1] < out[:, 8, 8, 1]
    assert 10 < flipped.sum() < 54
    dx = np.where(flipped, out[:, 8, 8, 1] - (w - 1 - 8), 8 - out[:, 8, 8, 1])
    assert np.abs(dx).max() <= 4.0 + 1e-5
    assert out.min() >= 0.0 and out.max() <= w - 1  # nearest fill: edge values only
    shift_only = pipelines.augment_batch(img, "shift", np.random.default_rng(0))
    assert (shift_only[:, 8, 9, 1] > shift_only[:, 8, 8, 1]).all()  # never flipped
    assert pipelines.augment_batch(img, "none", np.random.default_rng(0)) is img


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_two_network_steps_train_under_mixed_precision(precision):
    """--precision on this backend: both two-network steps take a finite step under each
    mixed policy, with float32 master weights and probabilities (float16 scales its loss)."""
    from noisylabels import flags, models

    flags.set_precision(precision)
    try:
        rng = np.random.default_rng(0)
        x, y = rng.random((16, 8, 8, 1), dtype=np.float32), rng.integers(0, 3, 16)
        for model, batch in ((CoTeaching, (x, y)), (PairedNetworks, ((x, x[:15]), (y, y[:15])))):
            m = model(models.build_model("cnn", (8, 8, 1), 3),
                      models.build_model("cnn", (8, 8, 1), 3))
            m.compile(keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3))
            if precision == "mixed_float16":
                assert isinstance(m.optimizer1, keras.optimizers.LossScaleOptimizer)
            if model is CoTeaching:
                m.forget_rate.assign(0.2)
            net1 = m.net1
            before = [np.array(w) for w in net1.get_weights()]
            logs = m.train_on_batch(*batch, return_dict=True)
            assert all(np.isfinite(float(v)) for v in logs.values()), logs
            assert all(w.dtype == "float32" for w in net1.weights)
            assert any(not np.array_equal(a, b) for a, b in zip(before, net1.get_weights()))
            probs = net1(x)
            assert keras.backend.standardize_dtype(probs.dtype) == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
