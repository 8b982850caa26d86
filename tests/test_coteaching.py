"""Tests of the fused Co-teaching training step (coteaching.CoTeaching).

The networks are Input(4) -> Dense(3, softmax) without BatchNorm, so every per-sample loss,
pick and SGD update can be recomputed exactly with numpy: the gradient of the mean
cross-entropy over a set P w.r.t. the Dense kernel W and bias c is
X_P^T (p_P - onehot(y_P)) / |P| and mean(p_P - onehot(y_P)).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from noisylabels.coteaching import CoTeaching

N_IN, N_CLS, LR = 4, 3, 0.1


def _net(rng, l2=0.0):
    inp = keras.Input(shape=(N_IN,), name="image")
    reg = keras.regularizers.L2(l2) if l2 else None
    out = keras.layers.Dense(N_CLS, activation="softmax", kernel_regularizer=reg)(inp)
    net = keras.Model(inp, out)
    net.set_weights(
        [rng.normal(0, 1.0, (N_IN, N_CLS)).astype("float32"),
         rng.normal(0, 0.5, (N_CLS,)).astype("float32")]
    )
    return net


def _model(seed=0, l2=(0.0, 0.0)):
    keras.utils.set_random_seed(seed)
    rng = np.random.RandomState(seed)
    model = CoTeaching(_net(rng, l2[0]), _net(rng, l2[1]))
    model.compile(keras.optimizers.SGD(LR), keras.optimizers.SGD(LR))
    return model


def _np_probs(net, x):
    w, c = (np.asarray(v, dtype=np.float64) for v in net.get_weights())
    z = x.astype(np.float64) @ w + c
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _np_ce(net, x, y):
    return -np.log(_np_probs(net, x)[np.arange(len(y)), y])


def _np_picks(ce, keep):
    # Stable ordering, as tf.math.top_k breaks ties by lower index (no ties in these tests).
    return np.sort(np.argsort(ce, kind="stable")[:keep])


def _np_grad(net, x, y, picks, l2=0.0):
    p = _np_probs(net, x[picks])
    d = p - np.eye(N_CLS)[y[picks]]
    w = np.asarray(net.get_weights()[0], dtype=np.float64)
    return x[picks].T.astype(np.float64) @ d / len(picks) + 2 * l2 * w, d.mean(axis=0)


def _batch(seed, b, n_s=None):
    rng = np.random.RandomState(100 + seed)
    x = rng.normal(0, 1.5, (b, N_IN)).astype("float32")
    y = rng.randint(0, N_CLS, b).astype("int32")
    n_s = b if n_s is None else n_s
    from_s = (np.arange(b) < n_s).astype("float32")
    clean = rng.randint(0, 2, b).astype("float32")
    return x, y, from_s, clean


def _inputs(x, from_s, clean):
    return {"image": x, "from_s": from_s, "clean": clean}


def _weights(model):
    return [np.asarray(v, dtype=np.float64) for v in model.net1.get_weights()], [
        np.asarray(v, dtype=np.float64) for v in model.net2.get_weights()
    ]


def _find_disagreeing_setup(b, keep, n_s=None):
    """A (seed, batch) where the two nets' small-loss picks differ (deterministic search)."""
    for seed in range(50):
        model = _model(seed)
        x, y, from_s, clean = _batch(seed, b, n_s)
        pick1 = _np_picks(_np_ce(model.net1, x, y), keep)
        pick2 = _np_picks(_np_ce(model.net2, x, y), keep)
        if set(pick1) != set(pick2):
            return model, (x, y, from_s, clean), pick1, pick2
    raise AssertionError("no seed gave disagreeing picks")


def test_exchange_update_matches_peer_picks():
    b, r = 10, 0.4
    keep = round(b * (1 - r))  # 6
    model, (x, y, from_s, clean), pick1, pick2 = _find_disagreeing_setup(b, keep)
    g1_peer = _np_grad(model.net1, x, y, pick2)
    g1_own = _np_grad(model.net1, x, y, pick1)
    g2_peer = _np_grad(model.net2, x, y, pick1)
    g2_own = _np_grad(model.net2, x, y, pick2)
    ce1, ce2 = _np_ce(model.net1, x, y), _np_ce(model.net2, x, y)
    (w1, c1), (w2, c2) = _weights(model)

    model.forget_rate.assign(r)
    logs = model.train_on_batch(_inputs(x, from_s, clean), y, return_dict=True)
    (w1n, c1n), (w2n, c2n) = _weights(model)

    # Plain SGD: the update is exactly -lr * gradient of the peer-picked mean CE.
    np.testing.assert_allclose(w1n - w1, -LR * g1_peer[0], atol=2e-6)
    np.testing.assert_allclose(c1n - c1, -LR * g1_peer[1], atol=2e-6)
    np.testing.assert_allclose(w2n - w2, -LR * g2_peer[0], atol=2e-6)
    np.testing.assert_allclose(c2n - c2, -LR * g2_peer[1], atol=2e-6)
    # ... and not the update on the net's own picks.
    assert np.abs((w1n - w1) + LR * g1_own[0]).max() > 1e-3
    assert np.abs((w2n - w2) + LR * g2_own[0]).max() > 1e-3

    assert logs["keep"] == pytest.approx(keep)
    assert logs["loss1"] == pytest.approx(ce1[pick2].mean(), rel=1e-5)
    assert logs["loss2"] == pytest.approx(ce2[pick1].mean(), rel=1e-5)
    assert logs["kept_clean1"] == pytest.approx(clean[pick1].mean(), rel=1e-6)
    assert logs["kept_clean2"] == pytest.approx(clean[pick2].mean(), rel=1e-6)


def test_training_accuracy_is_on_s_part_with_old_weights():
    b, n_s = 12, 8
    model = _model(5)
    x, y, from_s, clean = _batch(5, b, n_s)
    correct1 = _np_probs(model.net1, x).argmax(1) == y
    correct2 = _np_probs(model.net2, x).argmax(1) == y
    logs = model.train_on_batch(_inputs(x, from_s, clean), y, return_dict=True)
    # Set-up check: the S-part accuracy differs from the whole-batch one.
    assert correct1[:n_s].mean() != correct1.mean() and correct2[:n_s].mean() != correct2.mean()
    assert logs["acc1"] == pytest.approx(correct1[:n_s].mean())
    assert logs["acc2"] == pytest.approx(correct2[:n_s].mean())


@pytest.mark.parametrize(
    "b, n_s, r",
    [
        (10, 10, 0.0),  # keep everything
        (10, 10, 0.25),  # 7.5 -> 8 (half to even)
        (10, 10, 0.35),  # 6.5 -> 6 (half to even)
        # Near-ties where Python's double arithmetic decides; a float32 forget_rate misses them
        # (cast to float64 first: 13.49999998 -> 13; or all in float32: 4.5 -> 4, 13.5 -> 14).
        (15, 15, 0.1),  # 15 * 0.9 = 13.5 -> 14
        (15, 15, 0.7),  # 15 * 0.30000000000000004 = 4.500000000000001 -> 5
        (30, 30, 0.55),  # 13.499999999999998 -> 13
        (12, 8, 0.5),  # C part present: keep from b_S = 8 -> 4, not from b = 12
        (12, 5, 0.5),  # 2.5 -> 2 from b_S
        (12, 8, 1.0),  # 0 -> clipped to 1
    ],
)
def test_keep_count_follows_b_s(b, n_s, r):
    model = _model(1)
    x, y, from_s, clean = _batch(1, b, n_s)
    expected = min(max(round(n_s * (1 - r)), 1), b)
    model.forget_rate.assign(r)
    logs = model.train_on_batch(_inputs(x, from_s, clean), y, return_dict=True)
    assert logs["keep"] == expected


def test_picks_may_come_from_c_part():
    # S part: 6 samples labelled with the class both nets find least likely (high loss);
    # C part: 6 samples labelled with the class both nets find most likely (low loss).
    # keep = round(b_S * 0.5) = 3 is counted from S but must be taken from C.
    b, n_s, r = 12, 6, 0.5
    model = _model(2)
    x, _, from_s, clean = _batch(2, b, n_s)
    p = _np_probs(model.net1, x) + _np_probs(model.net2, x)
    y = np.where(np.arange(b) < n_s, p.argmin(1), p.argmax(1)).astype("int32")
    keep = 3
    pick1 = _np_picks(_np_ce(model.net1, x, y), keep)
    pick2 = _np_picks(_np_ce(model.net2, x, y), keep)
    assert (pick1 >= n_s).all() and (pick2 >= n_s).all(), "set-up: picks should be in C"
    g1 = _np_grad(model.net1, x, y, pick2)
    g2 = _np_grad(model.net2, x, y, pick1)
    (w1, c1), (w2, c2) = _weights(model)

    model.forget_rate.assign(r)
    logs = model.train_on_batch(_inputs(x, from_s, clean), y, return_dict=True)
    (w1n, c1n), (w2n, c2n) = _weights(model)
    assert logs["keep"] == keep
    np.testing.assert_allclose(w1n - w1, -LR * g1[0], atol=2e-6)
    np.testing.assert_allclose(c1n - c1, -LR * g1[1], atol=2e-6)
    np.testing.assert_allclose(w2n - w2, -LR * g2[0], atol=2e-6)
    np.testing.assert_allclose(c2n - c2, -LR * g2[1], atol=2e-6)


def test_regularisation_loss_is_added_per_net():
    b, r, l2 = 10, 0.3, 0.05
    keep = round(b * (1 - r))
    model = _model(4, l2=(l2, 0.0))
    x, y, from_s, clean = _batch(4, b)
    pick1 = _np_picks(_np_ce(model.net1, x, y), keep)
    pick2 = _np_picks(_np_ce(model.net2, x, y), keep)
    g1 = _np_grad(model.net1, x, y, pick2, l2=l2)
    g2 = _np_grad(model.net2, x, y, pick1)
    loss1 = _np_ce(model.net1, x, y)[pick2].mean()
    (w1, _), (w2, _) = _weights(model)
    model.forget_rate.assign(r)
    logs = model.train_on_batch(_inputs(x, from_s, clean), y, return_dict=True)
    (w1n, _), (w2n, _) = _weights(model)
    np.testing.assert_allclose(w1n - w1, -LR * g1[0], atol=2e-6)
    np.testing.assert_allclose(w2n - w2, -LR * g2[0], atol=2e-6)
    # The logged loss excludes the regularisation term.
    assert logs["loss1"] == pytest.approx(loss1, rel=1e-5)


def test_clean_flags_do_not_change_the_update():
    b, r = 10, 0.4
    x, y, from_s, clean = _batch(5, b)
    updates, logs = [], []
    for flags in (clean, 1.0 - clean):
        model = _model(5)
        before = _weights(model)
        model.forget_rate.assign(r)
        logs.append(model.train_on_batch(_inputs(x, from_s, flags), y, return_dict=True))
        after = _weights(model)
        updates.append([a - bf for na, nb in zip(after, before) for a, bf in zip(na, nb)])
    for u_a, u_b in zip(*updates):
        np.testing.assert_array_equal(u_a, u_b)
    for key in ("loss1", "loss2", "acc1", "acc2", "keep"):
        assert logs[0][key] == logs[1][key]
    # The tracking metric itself does see the flags (complementary fractions).
    assert logs[0]["kept_clean1"] + logs[1]["kept_clean1"] == pytest.approx(1.0)


def test_smoke_fit_with_dataset_and_validation():
    keras.utils.set_random_seed(7)
    rng = np.random.RandomState(7)
    n, n_test = 50, 20
    x = rng.normal(0, 1, (n, N_IN)).astype("float32")
    y = rng.randint(0, N_CLS, n).astype("int32")
    from_s = (rng.uniform(size=n) < 0.7).astype("float32")
    clean = (rng.uniform(size=n) < 0.8).astype("float32")
    x_test = rng.normal(0, 1, (n_test, N_IN)).astype("float32")
    y_test = rng.randint(0, N_CLS, n_test).astype("int32")

    traces = []

    class Counting(CoTeaching):
        def train_step(self, data):
            traces.append(1)  # runs only while tf.function traces
            return super().train_step(data)

    model = Counting(_net(rng), _net(rng))
    opt1, opt2 = keras.optimizers.Adam(1e-2), keras.optimizers.Adam(1e-2)
    model.compile(opt1, opt2)
    # Built in compile: iterations, learning rate, m and v of kernel and bias.
    for opt, net in ((opt1, model.net1), (opt2, model.net2)):
        assert opt.built and len(opt.variables) >= 2 * len(net.trainable_variables)
        names = {v.path for v in opt.variables}
        assert len(names) == len(opt.variables)
    assert model.optimizer is None

    ds = tf.data.Dataset.from_tensor_slices(
        ({"image": x, "from_s": from_s, "clean": clean}, y)
    ).batch(16)  # 16, 16, 16, 2: last batch smaller

    rates = [0.0, 0.2, 0.3]
    cb = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: model.forget_rate.assign(rates[epoch])
    )
    hist = model.fit(ds, epochs=3, validation_data=(x_test, y_test), callbacks=[cb], verbose=0,
                     shuffle=False)
    for key in ("loss1", "loss2", "acc1", "acc2", "keep", "kept_clean1", "kept_clean2",
                "val_accuracy1", "val_accuracy2"):
        assert key in hist.history and len(hist.history[key]) == 3, key
        assert np.all(np.isfinite(hist.history[key])), key
    assert not any(k.startswith("val_") and k[4:] in ("loss1", "keep") for k in hist.history)
    assert len(traces) <= 2, f"train_step traced {len(traces)} times"

    # Mean keep per step of the last epoch, from the b_S of each batch.
    b_s = [from_s[i:i + 16].sum() for i in range(0, n, 16)]
    assert hist.history["keep"][-1] == pytest.approx(
        np.mean([min(max(round(s * 0.7), 1), 16) for s in b_s]), rel=1e-6
    )
    # Validation accuracies are those of the final networks (inference mode).
    acc1 = (_np_probs(model.net1, x_test).argmax(1) == y_test).mean()
    acc2 = (_np_probs(model.net2, x_test).argmax(1) == y_test).mean()
    assert hist.history["val_accuracy1"][-1] == pytest.approx(acc1)
    assert hist.history["val_accuracy2"][-1] == pytest.approx(acc2)

    # evaluate after fit reports only the test metrics; dict inputs work too.
    res = model.evaluate(x_test, y_test, verbose=0, return_dict=True)
    assert set(res) == {"accuracy1", "accuracy2"}
    assert res["accuracy1"] == pytest.approx(acc1) and res["accuracy2"] == pytest.approx(acc2)
    ones = np.ones(n_test, "float32")
    res_dict = model.evaluate(
        {"image": x_test, "from_s": ones, "clean": ones}, y_test, verbose=0, return_dict=True
    )
    assert res_dict == pytest.approx(res)
    # predict() gives net 1.
    np.testing.assert_allclose(
        model.predict(x_test, verbose=0), _np_probs(model.net1, x_test), atol=1e-5
    )


# --------------------------------------------------------------------------- #
# selection="authors": the authors' predict() then train_on_batch(peer's picks) #
# --------------------------------------------------------------------------- #
BN_MOMENTUM = 0.5


def _bn_net(rng):
    """Input(4) -> Dense(3, no bias) -> BatchNorm -> Dense(N_CLS, softmax), with moving
    statistics far from any batch's, so inference-mode and training-mode losses differ."""
    inp = keras.Input(shape=(N_IN,), name="image")
    h = keras.layers.Dense(3, use_bias=False, name="d1")(inp)
    h = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name="bn")(h)
    out = keras.layers.Dense(N_CLS, activation="softmax", name="d2")(h)
    net = keras.Model(inp, out)
    net.get_layer("d1").set_weights([rng.normal(0, 1.0, (N_IN, 3)).astype("float32")])
    net.get_layer("bn").set_weights([rng.uniform(0.5, 2.0, 3).astype("float32"),
                                     rng.normal(0, 0.5, 3).astype("float32"),
                                     rng.normal(0, 2.0, 3).astype("float32"),
                                     rng.uniform(0.1, 4.0, 3).astype("float32")])
    net.get_layer("d2").set_weights([rng.normal(0, 1.5, (3, N_CLS)).astype("float32"),
                                     rng.normal(0, 0.5, N_CLS).astype("float32")])
    return net


def _reference_step(net, x, y, picks):
    """The authors' update of one network: a copy compiled as theirs (plain SGD here, sparse
    cross-entropy) and ``train_on_batch`` on the picked samples only."""
    ref = keras.models.clone_model(net)
    ref.set_weights(net.get_weights())
    ref.compile(optimizer=keras.optimizers.SGD(LR), loss="sparse_categorical_crossentropy")
    ref.train_on_batch(x[picks], y[picks])
    return ref.get_weights()


def _np_inference_logp(net, x):
    """Log-probabilities of the network in inference mode (BN moving statistics)."""
    (k1,), (gamma, beta, mean, var), (k2, c2) = (
        [np.asarray(v, np.float64) for v in net.get_layer(n).get_weights()]
        for n in ("d1", "bn", "d2"))
    h = (x @ k1 - mean) / np.sqrt(var + 1e-3) * gamma + beta
    z = h @ k2 + c2
    z -= z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def _np_inference_ce(net, x, y):
    return -_np_inference_logp(net, x)[np.arange(len(y)), y]


def _authors_setup(b, keep):
    """A seed whose inference-mode picks differ between the nets and from the fused picks."""
    for seed in range(50):
        keras.utils.set_random_seed(seed)
        rng = np.random.RandomState(seed)
        nets = _bn_net(rng), _bn_net(rng)
        x, y, from_s, clean = _batch(seed, b)
        inf = [_np_picks(_np_inference_ce(n, x, y), keep) for n in nets]
        weights = [n.get_weights() for n in nets]  # a training-mode call moves the BN averages
        train = [_np_picks(keras.ops.convert_to_numpy(keras.losses.sparse_categorical_crossentropy(
            y, n(x, training=True))), keep) for n in nets]
        for n, w in zip(nets, weights):
            n.set_weights(w)
        if set(inf[0]) != set(inf[1]) and all(set(i) != set(t) for i, t in zip(inf, train)):
            return nets, (x, y, from_s, clean), inf
    raise AssertionError("no seed gave inference-mode picks that differ")


def test_authors_selection_matches_predict_then_train_on_batch():
    b, r = 10, 0.4
    keep = round(b * (1 - r))  # 6
    nets, (x, y, from_s, clean), (pick1, pick2) = _authors_setup(b, keep)
    expected1 = _reference_step(nets[0], x, y, pick2)
    expected2 = _reference_step(nets[1], x, y, pick1)
    correct = [_np_inference_logp(n, x).argmax(1) == y for n in nets]
    # Moving statistics by hand: EMA of the batch statistics of the peer's picks only.
    moving = []
    for net, picks in ((nets[0], pick2), (nets[1], pick1)):
        h = x[picks].astype(np.float64) @ np.asarray(net.get_layer("d1").get_weights()[0])
        _, _, mean, var = (np.asarray(v, np.float64) for v in net.get_layer("bn").get_weights())
        moving.append((BN_MOMENTUM * mean + (1 - BN_MOMENTUM) * h.mean(0),
                       BN_MOMENTUM * var + (1 - BN_MOMENTUM) * h.var(0)))

    model = CoTeaching(*nets, selection="authors")
    model.compile(keras.optimizers.SGD(LR), keras.optimizers.SGD(LR))
    model.forget_rate.assign(r)
    logs = model.train_on_batch(_inputs(x, from_s, clean), y, return_dict=True)

    for net, expected, (mean, var) in zip(nets, (expected1, expected2), moving):
        for got, want in zip(net.get_weights(), expected):
            np.testing.assert_allclose(got, want, atol=2e-6)
        _, _, got_mean, got_var = net.get_layer("bn").get_weights()
        np.testing.assert_allclose(got_mean, mean, atol=2e-6)
        np.testing.assert_allclose(got_var, var, atol=2e-6)
    assert logs["keep"] == pytest.approx(keep)
    assert logs["kept_clean1"] == pytest.approx(clean[pick1].mean(), rel=1e-6)
    assert logs["kept_clean2"] == pytest.approx(clean[pick2].mean(), rel=1e-6)
    # Training accuracy: from the inference-mode pass with the weights before the step.
    assert logs["acc1"] == pytest.approx(correct[0].mean())
    assert logs["acc2"] == pytest.approx(correct[1].mean())


def test_authors_and_fused_selection_differ_on_the_same_step():
    b, r = 10, 0.4
    keep = round(b * (1 - r))
    nets, (x, y, from_s, clean), _ = _authors_setup(b, keep)
    weights = [n.get_weights() for n in nets]
    after = {}
    for selection in ("fused", "authors"):
        for n, w in zip(nets, weights):
            n.set_weights(w)
        model = CoTeaching(*nets, selection=selection)
        model.compile(keras.optimizers.SGD(LR), keras.optimizers.SGD(LR))
        model.forget_rate.assign(r)
        model.train_on_batch(_inputs(x, from_s, clean), y)
        after[selection] = nets[0].get_weights()
    assert max(np.abs(a - f).max() for a, f in zip(after["authors"], after["fused"])) > 1e-4


def test_selection_must_be_known():
    rng = np.random.RandomState(0)
    with pytest.raises(ValueError, match="selection"):
        CoTeaching(_net(rng), _net(rng), selection="predict")
