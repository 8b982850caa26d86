"""--devices: data-parallel training with tf.distribute.MirroredStrategy (devices.device_strategy).

The CPU is split into two logical devices, which must happen before TensorFlow initialises,
so the two-replica checks run in subprocesses (the scripts below, started together so that they
overlap) that print their measurements as JSON; the tests here assert on them. One training
step on a fixed batch, run once on one device and once on two replicas from the same weights,
must give the same weights.
"""

import json
import subprocess
import sys

import pytest
from conftest import ROOT, subprocess_env

from noisylabels import devices

TOL = 1e-5  # float32 rounding: the two-replica gradient is a sum of two partial sums

TWO_CPUS = r'''
import json, os, tempfile, time
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import numpy as np
import keras

from noisylabels import incv_train
from noisylabels import models
from noisylabels import utils
from noisylabels import coteaching
from noisylabels import devices
from noisylabels import training

T0 = time.time()
out = {"seconds": {}}


def lap(name):
    out["seconds"][name] = round(time.time() - T0, 1)
'''

STEPS = TWO_CPUS + r'''
mirrored = devices.device_strategy("all")
default = devices.device_strategy("default")
out["replicas"] = mirrored.num_replicas_in_sync
out["same_object"] = devices.device_strategy("all") is mirrored
out["describe"] = devices.describe_strategy(mirrored)
try:
    devices.check_batch_size(15, mirrored)
    out["odd_batch_error"] = None
except ValueError as err:
    out["odd_batch_error"] = str(err)
devices.check_batch_size(16, mirrored)
N_IN, HID, N_CLS, B = 5, 6, 3, 16
rng = np.random.RandomState(0)
x = rng.normal(0, 1, (B, N_IN)).astype("float32")
y = rng.randint(0, N_CLS, B).astype("int32")


def mlp(seed):  # Dense-tanh-Dense-softmax, no BatchNorm
    r = np.random.RandomState(seed)
    inp = keras.Input((N_IN,), name="image")
    h = keras.layers.Dense(HID, activation="tanh")(inp)
    net = keras.Model(inp, keras.layers.Dense(N_CLS, activation="softmax")(h))
    net.set_weights([r.normal(0, 0.8, w.shape).astype("float32") for w in net.get_weights()])
    return net


def maxdiff(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b))


def cw(model):  # the two networks' weights
    return model.net1.get_weights() + model.net2.get_weights()


def one_batch(inputs, labels):  # a tf.data batch: fit distributes (splits) it across replicas
    return tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(len(labels))


# (a) single network compiled as training.compile_classifier does (sparse cross-entropy on the
# softmax, accuracy) but with plain SGD: Adam's first steps do not depend on the gradient's
# scale, so they could not reveal a wrongly scaled (e.g. summed, not averaged) gradient.
def classifier_step(strategy):
    with strategy.scope():
        net = mlp(1)
        net.compile(keras.optimizers.SGD(0.5), "sparse_categorical_crossentropy",
                    metrics=["accuracy"])
    logs = net.fit(one_batch(x, y), epochs=1, verbose=0).history
    return net.get_weights(), {k: v[-1] for k, v in logs.items()}

(w1, l1), (w2, l2) = classifier_step(default), classifier_step(mirrored)
out["classifier"] = {"diff": maxdiff(w1, w2), "moved": maxdiff(w1, mlp(1).get_weights()),
                     "logs1": l1, "logs2": l2}


lap("a")
# (b) Co-teaching, forget rate 0 on an all-S batch: identical maths on 1 and 2 replicas, even
# when the batch does not split evenly (15 = 8 + 7: the mean is over all picks, not of means).
def run_coteaching(strategy, rate, inputs, labels, lr=0.5):
    with strategy.scope():
        model = coteaching.CoTeaching(mlp(1), mlp(2))
        model.compile(keras.optimizers.SGD(lr), keras.optimizers.SGD(lr))
    model.forget_rate.assign(rate)
    logs = model.fit(one_batch(inputs, labels), epochs=1, verbose=0).history
    return model, {k: v[-1] for k, v in logs.items()}

clean = (rng.uniform(size=B) < 0.7).astype("float32")
all_s = {"image": x[:15], "from_s": np.ones(15, "float32"), "clean": clean[:15]}
(m1, l1), (m2, l2) = (run_coteaching(default, 0.0, all_s, y[:15]),
                      run_coteaching(mirrored, 0.0, all_s, y[:15]))
out["coteaching_r0"] = {"diff": maxdiff(cw(m1), cw(m2)),
                        "moved": maxdiff(cw(m1), mlp(1).get_weights() + mlp(2).get_weights()),
                        "logs1": l1, "logs2": l2}

lap("b")
# (c) forget rate 0.25, S part (10) first then C part (2): replica 0 gets 6 S, replica 1 gets
# 4 S + 2 C, so keep_r = round(4.5) = 4 (half to even) and round(3.0) = 3: 7 in all, against
# round(7.5) = 8 on one device. With SGD the update is linear in the gradient, so the
# two-replica step (the mean over all 7 picks) must equal the single-device steps on each
# share (each with its own keep_r and its own peer picks) averaged with weights 4/7 and 3/7.
n, n_s = 12, 10
xs, ys = x[:n], y[:n]
mixed = {"image": xs, "from_s": (np.arange(n) < n_s).astype("float32"),
         "clean": clean[:n]}
share = lambda d, sl: {k: v[sl] for k, v in d.items()}
(mm, lm) = run_coteaching(mirrored, 0.25, mixed, ys)
(s0, k0) = run_coteaching(default, 0.25, share(mixed, slice(0, 6)), ys[:6])
(s1, k1) = run_coteaching(default, 0.25, share(mixed, slice(6, n)), ys[6:])
(whole, kw) = run_coteaching(default, 0.25, mixed, ys)
per_share = [(4 * a + 3 * b) / 7 for a, b in zip(cw(s0), cw(s1))]
out["coteaching_r025"] = {
    "diff_to_mean_of_shares": maxdiff(cw(mm), per_share),
    "diff_to_whole_batch": maxdiff(cw(mm), cw(whole)),
    "keep": lm["keep"], "keep_shares": [k0["keep"], k1["keep"]], "keep_whole": kw["keep"],
    "loss1": lm["loss1"], "loss1_shares": [k0["loss1"], k1["loss1"]]}

lap("coteaching")
# (d) BatchNorm with devices.sync_batchnorm: same initial weights (same seed) under the scope,
# same step, one moving mean per replica that stays equal, and no NaN when a replica's share
# is empty (a last batch of one sample).
def bn_net(strategy):
    keras.utils.set_random_seed(3)
    with strategy.scope():
        inp = keras.Input((N_IN,))
        h = keras.layers.BatchNormalization(momentum=0.5, name="bn")(keras.layers.Dense(HID)(inp))
        h = keras.layers.Activation("relu")(h)
        net = keras.Model(inp, keras.layers.Dense(N_CLS, activation="softmax")(h))
        switched = devices.sync_batchnorm(net, strategy)
        net.compile(keras.optimizers.SGD(0.5), "sparse_categorical_crossentropy")
    return net, switched

(c1, n1), (c2, n2) = bn_net(default), bn_net(mirrored)
out["bn_switched"] = [n1, n2]
out["bn_initial_diff"] = maxdiff(c1.get_weights(), c2.get_weights())
for c in (c1, c2):
    c.fit(one_batch(x, y), verbose=0)
out["bn_step_diff"] = maxdiff(c1.get_weights(), c2.get_weights())
out["bn_moved"] = maxdiff(c1.get_weights(), bn_net(default)[0].get_weights())
# Keras needs the first batch of a fit to split evenly (devices.check_batch_size): 16, then 1.
x17, y17 = np.concatenate([x, x[:1] + 1]), np.concatenate([y, y[:1]])
c2.fit(tf.data.Dataset.from_tensor_slices((x17, y17)).batch(16), verbose=0)
copies = [np.asarray(v) for v in c2.get_layer("bn").moving_mean.value.values]
out["bn_replica_copies"] = len(copies)
out["bn_replica_gap"] = maxdiff(copies[:1], copies[1:])
out["bn_finite"] = bool(all(np.isfinite(c).all() for c in copies)
                        and np.isfinite(c2.predict(x17, verbose=0)).all())
lap("batchnorm")

# (f) Adam and the scripts' BatchNorm network (models "cnn": conv-BN-ReLU, synchronised BN),
# built and compiled as the scripts do (training.compile_classifier: Adam); one step of a
# 16-image batch, alone and inside CoTeaching (forget rate 0, all S), on one device and on two
# replicas from the same seed: same initial weights, same weights and BN statistics after.
x8 = rng.normal(0, 1, (B, 8, 8, 1)).astype("float32")
ones = np.ones(B, "float32")


def cnn_classifier(strategy):
    keras.utils.set_random_seed(4)
    with strategy.scope():
        net = models.build_model("cnn", (8, 8, 1), N_CLS)
        devices.sync_batchnorm(net, strategy)
        training.compile_classifier(net, lr=1e-3)
    init = net.get_weights()
    net.fit(one_batch(x8, y), epochs=1, verbose=0)
    return init, net.get_weights()


def cnn_coteaching(strategy):
    keras.utils.set_random_seed(5)
    with strategy.scope():
        nets = [models.build_model("cnn", (8, 8, 1), N_CLS) for _ in range(2)]
        for net in nets:
            devices.sync_batchnorm(net, strategy)
        model = coteaching.CoTeaching(*nets)
        model.compile(keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3))
    init = cw(model)
    model.fit(one_batch({"image": x8, "from_s": ones, "clean": ones}, y), epochs=1, verbose=0)
    return init, cw(model)


for name, fn in (("adam_bn_classifier", cnn_classifier), ("adam_bn_coteaching", cnn_coteaching)):
    (i1, w1), (i2, w2) = fn(default), fn(mirrored)
    out[name] = {"initial_diff": maxdiff(i1, i2), "diff": maxdiff(w1, w2),
                 "moved": maxdiff(w1, i1)}
lap("adam_batchnorm")

# (e) incv_train.py with --devices all: Co-teaching (CoTeaching, callbacks, validation,
# checkpoint) on 2 replicas, small; it prints which devices it uses.
cot_dir = tempfile.mkdtemp()
cot = incv_train.main(incv_train.parse_args([
    "--dataset", "digits", "--arch", "cnn", "--n_train", "60", "--batch_size", "16",
    "--method", "coteaching", "--epochs", "1", "--forget_rate", "0.3", "--verbose", "0",
    "--devices", "all", "--results_dir", cot_dir]))
out["script_accuracy"] = cot[0]["test_accuracy"]["model1"]
out["script_log"] = [r["test_accuracy_model1"] for r in utils.read_jsonl(
    os.path.join(cot_dir, "digits", "sym", "0.5", "coteaching", "seed0", "log.jsonl"))]
lap("script")
print("RESULT " + json.dumps(out))
'''


def _start(code):
    # No GPU: the two replicas are the two logical CPU devices.
    env = subprocess_env(CUDA_VISIBLE_DEVICES="")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def _result(proc):
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    lines = [x for x in stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, stdout[-3000:] + stderr[-5000:]
    return json.loads(lines[-1][len("RESULT "):]), stdout


@pytest.fixture(scope="module")
def two():
    return _result(_start(STEPS))


def test_all_devices_gives_two_replicas_on_two_logical_cpus(two):
    res, _ = two
    assert res["replicas"] == 2 and res["same_object"]
    assert "MirroredStrategy over 2 replicas" in res["describe"]
    assert "CPU:0" in res["describe"] and "CPU:1" in res["describe"]
    # Keras needs the first batch of each fit to split evenly: a clear error up front.
    assert "--batch_size 15 does not split evenly" in res["odd_batch_error"]


def test_single_network_step_is_the_same_on_two_replicas(two):
    r = two[0]["classifier"]
    assert r["moved"] > 1e-2  # the step did change the weights
    assert r["diff"] < TOL
    for k in ("loss", "accuracy"):
        assert r["logs2"][k] == pytest.approx(r["logs1"][k], abs=TOL)


def test_coteaching_keep_all_is_the_same_on_two_replicas(two):
    r = two[0]["coteaching_r0"]
    assert r["moved"] > 1e-2
    assert r["diff"] < TOL
    # Metrics aggregate over both replicas (weighted means over all samples / picks).
    assert set(r["logs2"]) == set(r["logs1"])
    for k, v in r["logs1"].items():
        assert r["logs2"][k] == pytest.approx(v, abs=TOL), k
    assert r["logs2"]["keep"] == 15


def test_coteaching_forgetting_picks_per_replica(two):
    r = two[0]["coteaching_r025"]
    # Each replica: its own keep from its S share, each net updated on its peer's picks of
    # that share; the update is the mean over all 7 picks of both replicas.
    assert r["diff_to_mean_of_shares"] < TOL
    assert r["diff_to_whole_batch"] > 1e-3  # not the whole-batch selection
    # Per-replica rounding: round(4.5) + round(3.0) = 4 + 3 against round(7.5) = 8.
    assert r["keep_shares"] == [4, 3] and r["keep"] == 7 and r["keep_whole"] == 8
    # loss1: mean over all 7 picks = (4 * share 0 + 3 * share 1) / 7.
    l0, l1 = r["loss1_shares"]
    assert r["loss1"] == pytest.approx((4 * l0 + 3 * l1) / 7, abs=TOL)


def test_batchnorm_uses_the_global_batch_on_two_replicas(two):
    res = two[0]
    assert res["bn_switched"] == [0, 1]  # one device: untouched
    assert res["bn_initial_diff"] == 0.0  # same seed, same initial weights under the scope
    assert res["bn_moved"] > 1e-2
    assert res["bn_step_diff"] < 1e-4  # E[x^2]-E[x]^2 vs two-pass variance: rounding only
    assert res["bn_replica_copies"] == 2 and res["bn_replica_gap"] < 1e-6
    assert res["bn_finite"]  # an empty replica share does not poison the moving statistics


@pytest.mark.parametrize("name", ["adam_bn_classifier", "adam_bn_coteaching"])
def test_adam_and_batchnorm_step_is_the_same_on_two_replicas(two, name):
    r = two[0][name]
    assert r["initial_diff"] == 0.0  # same seed, same initial weights under the scope
    assert r["moved"] > 5e-4  # Adam's first step moves each weight by about lr = 1e-3
    assert r["diff"] < TOL


def test_script_trains_with_devices_all(two):
    res, stdout = two
    # The summary's accuracy is the last logged epoch's, a count out of digits' 450 test images.
    assert res["script_log"] == [res["script_accuracy"]]
    assert abs(res["script_accuracy"] * 450 - round(res["script_accuracy"] * 450)) < 1e-4
    printed = [x for x in stdout.splitlines() if not x.startswith("RESULT ")]
    assert sum("--devices all: tf.distribute.MirroredStrategy over 2 replicas" in x
               for x in printed) == 1


def test_all_devices_falls_back_on_one_device():
    import tensorflow as tf

    if len(tf.config.list_logical_devices("GPU")) > 1:
        pytest.skip("several GPUs visible: --devices all does not fall back here")
    if len(tf.config.list_logical_devices("CPU")) > 1 and not tf.config.list_logical_devices(
            "GPU"):
        pytest.skip("several logical CPU devices configured in this process")
    strategy = devices.device_strategy("all")
    assert strategy.num_replicas_in_sync == 1
    assert strategy is devices.device_strategy("default")
    assert len(devices.strategy_devices(strategy)) == 1
    text = devices.describe_strategy(strategy)
    assert "only one device is visible" in text and "no MirroredStrategy" in text
    devices.check_batch_size(127, strategy)  # any batch size on one device


def test_devices_flag():
    from noisylabels import incv_train, noisy_cv

    for mod in (noisy_cv, incv_train):
        assert mod.parse_args([]).devices == "default"
        assert mod.parse_args(["--devices", "all"]).devices == "all"
        with pytest.raises(SystemExit):
            mod.parse_args(["--devices", "gpu"])
    with pytest.raises(ValueError, match="--devices"):
        devices.device_strategy("gpus")
