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


# -- Table 1's other methods (noisylabels/algorithms/): each rule's toy values, and one SGD
# step through the method's training step equal to the hand-written loss's gradient step.
# tests/test_algorithms.py imports these cases to run them on TensorFlow as well.

from noisylabels.algorithms import d2l as d2l_mod  # noqa: E402
from noisylabels.algorithms import decoupling as dec_mod  # noqa: E402
from noisylabels.algorithms import fcorrection as fc_mod  # noqa: E402
from noisylabels.algorithms import mentornet as mn_mod  # noqa: E402
from noisylabels.algorithms.family import RuleNetwork  # noqa: E402


def _np(t):
    return np.asarray(keras.ops.convert_to_numpy(t), np.float64)


SYM_T = np.array([[.8, .1, .1], [.1, .8, .1], [.1, .1, .8]])
PAIR_T = np.array([[.6, .4, 0.], [0., .6, .4], [.4, 0., .6]])  # noise.transition_matrix asym .4


def test_forward_loss_toy_values():
    p = np.array([[.7, .2, .1], [.1, .6, .3], [.2, .2, .6]], np.float32)
    got = _np(fc_mod.forward_loss(np.array([1, 1, 2]), p, SYM_T))
    np.testing.assert_allclose(got, [1.427116, 0.653926, 0.653926], atol=1e-5)  # -ln .24, ...
    assert got.mean() == pytest.approx(0.911656, abs=1e-5)
    # the identity T is plain cross-entropy (-ln .2 = 1.609438)
    assert _np(fc_mod.forward_loss(np.array([1]), p[:1], np.eye(3)))[0] == pytest.approx(
        1.609438, abs=1e-5)
    # a pair-flip T with zeros: p T = [.46, .40, .14]
    assert _np(fc_mod.forward_loss(np.array([1]), p[:1], PAIR_T))[0] == pytest.approx(
        -np.log(0.40), abs=1e-5)


def test_decoupling_toy_values():
    eye = np.eye(3, dtype=np.float32)
    mask = _np(dec_mod.disagreement_mask(eye[[0, 1, 2, 0]], eye[[0, 2, 2, 1]]))
    np.testing.assert_array_equal(mask, [0, 1, 0, 1])
    ce = -np.log(np.array([.5, .25, .8, .125], np.float32))
    np.testing.assert_allclose(ce, [0.693147, 1.386294, 0.223144, 2.079442], atol=1e-5)
    # (1.386294 + 2.079442) / max(0.1 * 4, 2)
    assert float(_np(dec_mod.decoupling_loss(ce, mask.astype("float32"), min_batch=0.1))) \
        == pytest.approx(1.732868, abs=1e-5)
    # no disagreement: 0, not NaN
    assert float(_np(dec_mod.decoupling_loss(ce, np.zeros(4, "float32"), min_batch=0.1))) == 0.0
    # B = 128 with 5 disagreements: the floor rho * B = 12.8 divides
    ce128, m128 = np.full(128, 2.0, np.float32), np.zeros(128, np.float32)
    m128[:5] = 1.0
    assert float(_np(dec_mod.decoupling_loss(ce128, m128, min_batch=0.1))) == pytest.approx(
        10.0 / 12.8, rel=1e-6)


MN_L = np.array([0.1, 0.5, 1.0, 2.0, 3.0], np.float32)


@pytest.mark.parametrize("pct, v, loss", [
    (0, [1, 1, 1, 1, 1], 1.32), (18, [1, 1, 1, 1, 1], 1.32),   # burn-in: e <= 18
    (19, [1, 1, 1, 0, 0], 0.32), (89, [1, 1, 1, 0, 0], 0.32),  # 1[l <= lambda]
    (90, [1, 1, 1, .5, 0], 0.52), (99, [1, 1, 1, .5, 0], 0.52)])  # clip(1 - (l - lambda))
def test_mentornet_pd_toy_values(pct, v, loss):
    # p = 0.7: descending index round(4 * 0.3) = 1 -> q = 2.0; lambda = .5 * 1 + .5 * 2 = 1.5
    assert float(_np(mn_mod.batch_percentile(MN_L, 0.7))) == pytest.approx(2.0)
    loss_t = keras.ops.convert_to_tensor(MN_L)  # as the step passes it (torch: a tensor)
    got = mn_mod.mentornet_pd_loss(loss_t, 1.0, pct, np.ones(5, np.float32), p=0.7, decay=0.5)
    got_loss, scale, lam, got_v = (_np(t) for t in got)
    assert float(lam) == pytest.approx(1.5)
    np.testing.assert_allclose(got_v, v, atol=1e-6)
    np.testing.assert_allclose(_np(mn_mod.curriculum_weights(MN_L - 1.5, pct)), v, atol=1e-6)
    assert float(got_loss) == pytest.approx(loss, abs=1e-5)   # (1/5) sum v l
    assert float(scale) == pytest.approx(sum(v) / 5, abs=1e-6)  # the L2 penalties' factor
    first = mn_mod.mentornet_pd_loss(loss_t, 0.0, pct, np.ones(5, np.float32), p=0.7, decay=0.5)
    assert float(_np(first[2])) == pytest.approx(1.0)  # from lambda = 0: (1 - d) q


def test_mentornet_percentile_is_tensorflows_nearest_and_keep_count_floors():
    x = np.arange(128, dtype=np.float32)
    # TF's 'nearest' on the descending sort: index round(127 * .5) = 64 (half to even) ->
    # value 63; numpy's 'nearest' gives 64
    assert float(_np(mn_mod.batch_percentile(x, 0.5))) == 63.0
    assert np.percentile(x, 50, method="nearest") == 64.0
    # order-free; p = 0.9: descending index round(12.7) = 13 -> 114 (the 90th percentile)
    assert float(_np(mn_mod.batch_percentile(x[::-1].copy(), 0.9))) == 114.0
    assert int(_np(mn_mod.keep_count(5, 0.5))) == 2  # floor(2.5)
    assert int(_np(mn_mod.keep_count(5, 0.4))) == 3  # 5 * 0.6 in float32 just below 3
    assert int(_np(mn_mod.keep_count(10, 0.3))) == 7
    assert int(_np(mn_mod.keep_count(128, 0.05))) == 121  # floor(121.6)


def test_d2l_loss_toy_values():
    p = np.array([[.6, .3, .1]], np.float32)
    before = float(_np(d2l_mod.d2l_loss(np.array([1]), p, 1.0, 0.0))[0])
    # targets clipped to [0.01/9, 0.99]: -(0.99 ln .3 + 0.01/9 (ln .6 + ln .1))
    assert before == pytest.approx(1.195059, abs=1e-5)
    assert before != pytest.approx(-np.log(0.3), abs=1e-3)  # not plain CE (1.203973)
    a = np.exp(-0.6)
    after = float(_np(d2l_mod.d2l_loss(np.array([1]), p, a, 1.0))[0])
    # target [1 - a, a, 0]: -(0.451188 ln .6 + 0.548812 ln .3)
    assert after == pytest.approx(0.891233, abs=1e-5)
    # the argmax term follows the prediction, not the label
    same = float(_np(d2l_mod.d2l_loss(np.array([0]), p, a, 1.0))[0])
    assert same == pytest.approx(-np.log(0.6), abs=1e-5)


# One step of SGD(LR) on Input(4) -> Dense(3, softmax): with dL/dz = G (b, 3) for the logits,
# the kernel's gradient is x^T G and the bias's the column sums of G.

def _step_data(b, seed):
    rng = np.random.RandomState(seed)
    # inputs small enough that no probability comes near the 1e-7 clips
    return (rng.normal(0, 0.5, (b, N_IN)).astype("float32"),
            rng.randint(0, N_CLS, b).astype("int32"))


def _assert_step(net, w, c, x, G, reg=0.0):
    """net's weights equal (w, c) after one SGD(LR) step of dL/dz = G plus ``reg`` times the
    L2 penalty's gradient (2 l2 w, l2 = 0.01 where reg is given)."""
    gw = x.T.astype(np.float64) @ G + reg * 2 * 0.01 * w
    nw, nc = _weights(net)
    np.testing.assert_allclose(nw, w - LR * gw, atol=2e-5)
    np.testing.assert_allclose(nc, c - LR * G.sum(axis=0), atol=2e-5)


def _rule_model(rule, seed=0, l2=0.0):
    model = RuleNetwork(_net(np.random.RandomState(seed), l2), rule)
    model.compile(optimizer=keras.optimizers.SGD(LR))
    return model


@pytest.mark.parametrize("T", [SYM_T, PAIR_T], ids=["sym", "pair"])
def test_forward_rule_step_is_the_hand_computed_gradient(T):
    x, y = _step_data(10, 1)
    model = _rule_model(fc_mod.ForwardRule(T))
    w, c = _weights(model.net)
    p = _np_probs(w, c, x)
    q_y = (p @ T)[np.arange(10), y]
    # d(-log (p T)_y)/dz_j = p_j - p_j T[j, y] / (p T)_y
    G = (p - p * T[:, y].T / q_y[:, None]) / 10
    logs = model.train_on_batch(x, y, return_dict=True)
    assert logs["loss"] == pytest.approx(np.mean(-np.log(q_y)), rel=1e-5)
    _assert_step(model.net, w, c, x, G)
    np.testing.assert_allclose(_np(model.fc_T), T, atol=1e-7)


def _pd(total_steps=100, dropout="0.0,100", seed=3):
    return mn_mod.MentorNetPD(total_steps=total_steps, p=0.7, decay=0.5, dropout=dropout,
                              seed=seed)


@pytest.mark.parametrize("step, lam0", [(0, 0.0), (50, 0.0), (50, 0.9), (95, 0.4)])
def test_mentornet_pd_step_is_the_hand_computed_gradient_and_keeps_its_state(step, lam0):
    """One step at progress ``step`` % (burn-in, hard, soft phases), no example dropout, an
    L2 penalty scaled by sum(v) / B; lambda and the step counter advance and persist (on
    JAX: assigned inside compute_loss, carried out of the stateless step)."""
    b = 10
    x, y = _step_data(b, step + 7)
    model = _rule_model(_pd(), l2=0.01)
    model.mn_step.assign(step)
    model.mn_lambda.assign(lam0)
    w, c = _weights(model.net)
    p = _np_probs(w, c, x)
    ce = -np.log(p[np.arange(b), y])
    desc = np.sort(ce)[::-1]
    lam = 0.5 * lam0 + 0.5 * desc[int(np.round((b - 1) * 0.3))]  # round(2.7) = 3
    if step <= 18:
        v = np.ones(b)
    elif step < 90:
        v = (ce - lam <= 0).astype(float)
    else:
        v = np.clip(1 - (ce - lam), 0, 1)
    assert 0 < v.sum() < b or step <= 18, (v, ce, lam)  # the weights matter here
    logs = model.train_on_batch(x, y, return_dict=True)
    l2_term = 0.01 * (w ** 2).sum()
    assert logs["loss"] == pytest.approx((v * ce).sum() / b + v.sum() / b * l2_term, rel=1e-5)
    assert logs["weight"] == pytest.approx(v.mean(), abs=1e-6)
    _assert_step(model.net, w, c, x, v[:, None] * (p - np.eye(N_CLS)[y]) / b, reg=v.sum() / b)
    assert int(_np(model.mn_step)) == step + 1
    assert float(_np(model.mn_lambda)) == pytest.approx(lam, rel=1e-5)
    model.evaluate(x, y, verbose=0)  # evaluation leaves the state alone
    assert int(_np(model.mn_step)) == step + 1
    assert float(_np(model.mn_lambda)) == pytest.approx(lam, rel=1e-5)
    # a second step: lambda moves on from the persisted value
    p2 = _np_probs(*_weights(model.net), x)
    ce2 = -np.log(p2[np.arange(b), y])
    model.train_on_batch(x, y)
    assert int(_np(model.mn_step)) == step + 2
    assert float(_np(model.mn_lambda)) == pytest.approx(
        0.5 * lam + 0.5 * np.sort(ce2)[::-1][3], rel=1e-5)


def test_mentornet_first_step_from_lambda_zero_inside_fit():
    """fit() (the traced step) from lambda 0 at the burn-in: lambda = (1 - d) q after one
    step; the step counter counts every batch across epochs."""
    x, y = _step_data(8, 11)
    model = _rule_model(_pd())
    ce = -np.log(_np_probs(*_weights(model.net), x)[np.arange(8), y])
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert float(_np(model.mn_lambda)) == pytest.approx(
        0.5 * np.sort(ce)[::-1][int(np.round(7 * 0.3))], rel=1e-5)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    assert int(_np(model.mn_step)) == 1 + 4


def test_mentornet_example_dropout_keeps_floor_b_times_one_minus_r():
    """Dropout r = 0.5 on B = 10 at the burn-in (v = 1): exactly 5 samples keep their weight;
    the step equals the hand-computed one for the kept 5 (found among the C(10, 5) subsets),
    the L2 factor is 5 / 10; the same seed draws the same samples."""
    import itertools

    b = 10
    x, y = _step_data(b, 5)
    picks = []
    for _ in range(2):
        model = _rule_model(_pd(dropout="0.5,100", seed=9), l2=0.01)
        w, c = _weights(model.net)
        d = _np_probs(w, c, x) - np.eye(N_CLS)[y]
        logs = model.train_on_batch(x, y, return_dict=True)
        assert logs["weight"] == pytest.approx(0.5)
        nw, nc = _weights(model.net)
        found = [s for s in itertools.combinations(range(b), 5)
                 if np.allclose(nc, c - LR * d[list(s)].sum(0) / b, atol=2e-6)]
        assert len(found) == 1, found
        v = np.zeros(b)
        v[list(found[0])] = 1.0
        _assert_step(model.net, w, c, x, v[:, None] * d / b, reg=0.5)
        picks.append(found[0])
    assert picks[0] == picks[1]
    assert len(model.get_weights()) == len(model.weights) + 1  # the seed's state travels
    # the stream moves on with every step (on JAX: carried out of the stateless step)
    state = _np(model.rule_seed.state)
    model.train_on_batch(x, y)
    assert not np.array_equal(_np(model.rule_seed.state), state)


@pytest.mark.parametrize("b, tau, keep", [(5, 0.4, 3), (10, 0.3, 7), (8, 0.0, 8)])
def test_self_paced_step_keeps_the_small_losses(b, tau, keep):
    x, y = _step_data(b, b)
    model = _rule_model(mn_mod.SelfPaced())
    model.sp_forget.assign(tau)
    w, c = _weights(model.net)
    p = _np_probs(w, c, x)
    ce = -np.log(p[np.arange(b), y])
    v = np.zeros(b)
    v[np.argsort(ce, kind="stable")[:keep]] = 1.0
    logs = model.train_on_batch(x, y, return_dict=True)
    assert logs["loss"] == pytest.approx((v * ce).sum() / keep, rel=1e-5)
    assert logs["weight"] == pytest.approx(keep / b)
    _assert_step(model.net, w, c, x, v[:, None] * (p - np.eye(N_CLS)[y]) / keep)


def test_self_paced_toy_value():
    model = _rule_model(mn_mod.SelfPaced())
    model.sp_forget.assign(0.4)
    probs = np.exp(-MN_L)[:, None] * np.eye(N_CLS, dtype=np.float32)[[0] * 5] + \
        (1 - np.exp(-MN_L))[:, None] * np.eye(N_CLS, dtype=np.float32)[[1] * 5]
    loss, _ = model.rule.loss(model, keras.ops.convert_to_tensor(np.zeros(5, "int32")),
                              keras.ops.convert_to_tensor(probs.astype("float32")), True)
    assert float(_np(loss)) == pytest.approx(1.6 / 3, abs=1e-5)  # [.1, .5, 1.0] kept


def _d2l_grad(p, y, alpha, turned):
    """dL/dz of D2L's batch-mean loss: (sum_k t_k) p - t for targets t."""
    onehot = np.eye(N_CLS)[y]
    if turned:
        t = alpha * onehot + (1 - alpha) * np.eye(N_CLS)[p.argmax(1)]
    else:
        t = np.clip(onehot, 0.01 / 9, 0.99)
    loss = -(t * np.log(p)).sum(1).mean()
    return (t.sum(1, keepdims=True) * p - t) / len(y), loss


@pytest.mark.parametrize("alpha, turned", [(1.0, 0.0), (0.3, 1.0), (0.8, 1.0)])
def test_d2l_rule_step_is_the_hand_computed_gradient(alpha, turned):
    x, y = _step_data(12, 4)
    model = _rule_model(d2l_mod.D2LRule(epochs=10))
    model.d2l_alpha.assign(alpha)
    model.d2l_turned.assign(turned)
    w, c = _weights(model.net)
    p = _np_probs(w, c, x)
    assert (p.argmax(1) != y).any()  # the bootstrapped term differs from the label's
    G, loss = _d2l_grad(p, y, alpha, turned)
    logs = model.train_on_batch(x, y, return_dict=True)
    assert logs["loss"] == pytest.approx(loss, rel=1e-5)
    _assert_step(model.net, w, c, x, G)


def test_d2l_alpha_assigned_after_tracing_changes_the_next_step_and_evaluation():
    """alpha and the turned flag are variables: assigned after fit() traced (compiled) the
    training and test steps, the next train_on_batch / evaluate / fit use the new values."""
    x, y = _step_data(12, 6)
    model = _rule_model(d2l_mod.D2LRule(epochs=10))
    model.fit(x, y, batch_size=12, epochs=1, verbose=0, shuffle=False,
              validation_data=(x, y))
    p = _np_probs(*_weights(model.net), x)
    assert model.evaluate(x, y, verbose=0) == pytest.approx(_d2l_grad(p, y, 1.0, 0)[1],
                                                            rel=1e-5)
    model.d2l_alpha.assign(0.3)
    model.d2l_turned.assign(1.0)
    want = _d2l_grad(p, y, 0.3, 1)[1]
    assert abs(want - _d2l_grad(p, y, 1.0, 0)[1]) > 1e-2
    assert model.evaluate(x, y, verbose=0) == pytest.approx(want, rel=1e-5)
    w, c = _weights(model.net)
    G, loss = _d2l_grad(p, y, 0.3, 1)
    logs = model.train_on_batch(x, y, return_dict=True)
    assert logs["loss"] == pytest.approx(loss, rel=1e-5)
    _assert_step(model.net, w, c, x, G)
    model.d2l_alpha.assign(0.8)
    w, c = _weights(model.net)
    p = _np_probs(w, c, x)
    G, loss = _d2l_grad(p, y, 0.8, 1)
    hist = model.fit(x, y, batch_size=12, epochs=1, verbose=0, shuffle=False)
    assert hist.history["loss"][0] == pytest.approx(loss, rel=1e-5)
    _assert_step(model.net, w, c, x, G)
    assert float(_np(model.d2l_alpha)) == pytest.approx(0.8)


@pytest.mark.parametrize("min_batch, same_init", [(0.1, False), (0.9, False), (0.1, True)])
def test_decoupling_step_is_the_hand_computed_update_on_disagreements(min_batch, same_init):
    """Both networks step on the samples their argmaxes disagree on, divided by
    max(rho B, #disagreements); identical networks never disagree: no step, loss 0."""
    b = 12
    rng = np.random.RandomState(21)
    net1, net2 = _net(rng), _net(rng)
    if same_init:
        net2.set_weights(net1.get_weights())
    model = dec_mod.Decoupling(net1, net2, min_batch=min_batch)
    model.compile(keras.optimizers.SGD(LR), keras.optimizers.SGD(LR))
    x, y = _step_data(b, 8)
    (w1, c1), (w2, c2) = _weights(net1), _weights(net2)
    p1, p2 = _np_probs(w1, c1, x), _np_probs(w2, c2, x)
    m = (p1.argmax(1) != p2.argmax(1)).astype(float)
    assert (m.sum() == 0) == same_init and (same_init or 0 < m.sum() < b)
    den = max(min_batch * b, m.sum())
    assert (den == m.sum()) == (min_batch == 0.1 and not same_init)  # both sides of the max
    logs = model.train_on_batch(x, y, return_dict=True)
    assert logs["disagree"] == pytest.approx(m.mean())
    for (w, c), p, net, key in (((w1, c1), p1, net1, "loss1"), ((w2, c2), p2, net2, "loss2")):
        ce = -np.log(p[np.arange(b), y])
        assert logs[key] == pytest.approx((m * ce).sum() / den, rel=1e-5, abs=1e-7)
        assert np.isfinite(logs[key])
        _assert_step(net, w, c, x, m[:, None] * (p - np.eye(N_CLS)[y]) / den)


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_table1_methods_train_under_mixed_precision(precision):
    """--precision on this backend for Table 1's other methods: each one-network rule and
    Decoupling take a finite step under each mixed policy, with float32 master weights and
    probabilities, their state variables float32 / int32 as built (float16 scales the loss)."""
    from noisylabels import flags, models
    from noisylabels.algorithms.family import one_network, two_networks

    flags.set_precision(precision)
    try:
        rng = np.random.default_rng(1)
        x, y = rng.random((16, 8, 8, 1), dtype=np.float32), rng.integers(0, 3, 16)
        methods = {
            "fcorrection": one_network(fc_mod.ForwardRule(SYM_T)),
            "mentornet": one_network(mn_mod.MentorNetPD(total_steps=10, p=0.7, decay=0.5,
                                                        dropout="0.5,17,0.05,83", seed=0)),
            "self_paced": one_network(mn_mod.SelfPaced()),
            "d2l": one_network(d2l_mod.D2LRule(4)),
            "decoupling": two_networks(dec_mod.Decoupling)}
        for name, method in methods.items():
            nets = [models.build_model("cnn", (8, 8, 1), 3) for _ in range(method.networks)]
            model = method.build(nets, 1e-3)
            if precision == "mixed_float16":
                assert all(isinstance(o, keras.optimizers.LossScaleOptimizer)
                           for o in method.optimizers(model)), name
            if name == "d2l":
                model.d2l_alpha.assign(0.6)
                model.d2l_turned.assign(1.0)
            if name == "self_paced":
                model.sp_forget.assign(0.25)
            before = [np.array(w) for w in nets[0].get_weights()]
            batch = ({"image": x, "from_s": np.ones(16, np.float32)}, y) \
                if method.networks == 2 else (x, y)
            logs = model.train_on_batch(*batch, return_dict=True)
            assert all(np.isfinite(float(v)) for v in logs.values()), (name, logs)
            assert all(w.dtype == "float32" for w in nets[0].weights), name
            assert any(not np.array_equal(a, b) for a, b in zip(before, nets[0].get_weights()))
            assert keras.backend.standardize_dtype(nets[0](x).dtype) == "float32"
            if name == "mentornet":
                assert int(_np(model.mn_step)) == 1 and _np(model.mn_lambda) > 0
    finally:
        keras.mixed_precision.set_global_policy("float32")
