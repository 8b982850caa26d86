"""--precision: mixed policies keep float32 probabilities and train; the flag is shared."""

import keras
import numpy as np
import pytest

from noisylabels import flags, incv_train, models, noisy_cv, paired, training


@pytest.fixture
def policy():
    yield flags.set_precision
    keras.mixed_precision.set_global_policy("float32")  # never leak into other tests


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("arch", ["cnn", "resnet20"])
def test_mixed_policy_keeps_float32_probabilities(policy, precision, arch):
    policy(precision)
    net = models.build_model(arch, (8, 8, 3), 5)
    assert net.get_layer("predictions").compute_dtype == precision.split("_")[1]
    x = np.random.default_rng(0).random((4, 8, 8, 3), dtype=np.float32)
    probs = net(x)
    assert probs.dtype == "float32" and net.outputs[0].dtype == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(probs).sum(1), 1.0, rtol=1e-6)
    assert all(w.dtype == "float32" for w in net.weights)  # float32 master weights


def test_paired_step_under_bfloat16_has_float32_losses(policy):
    policy("mixed_bfloat16")
    pair = paired.PairedNetworks(models.build_model("cnn", (8, 8, 1), 3),
                                   models.build_model("cnn", (8, 8, 1), 3))
    pair.compile(optimizer1=keras.optimizers.Adam(1e-3), optimizer2=keras.optimizers.Adam(1e-3))
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 8, 8, 1), dtype=np.float32), rng.integers(0, 3, 16)
    logs = pair.train_on_batch((x, x[:15]), (y, y[:15]), return_dict=True)
    assert np.isfinite(logs["loss1"]) and np.isfinite(logs["loss2"])
    assert int(pair.optimizer1.iterations) == 1


def test_precision_flag_is_shared_and_defaults_to_float32():
    for parse in (incv_train.parse_args, noisy_cv.parse_args):
        assert parse([]).precision == "float32"
        assert parse(["--precision", "mixed_bfloat16"]).precision == "mixed_bfloat16"
        with pytest.raises(SystemExit):
            parse(["--precision", "bfloat16"])


def test_coteaching_under_float16_scales_its_losses(policy):
    from noisylabels.coteaching import CoTeaching

    policy("mixed_float16")
    cot = CoTeaching(models.build_model("cnn", (8, 8, 1), 3),
                     models.build_model("cnn", (8, 8, 1), 3))
    cot.compile(optimizer1=keras.optimizers.Adam(1e-3), optimizer2=keras.optimizers.Adam(1e-3))
    assert isinstance(cot.optimizer1, keras.optimizers.LossScaleOptimizer)
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 8, 8, 1), dtype=np.float32), rng.integers(0, 3, 16)
    before = [w.copy() for w in cot.net1.get_weights()]
    logs = cot.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss1"])
    assert any(not np.array_equal(a, b) for a, b in zip(before, cot.net1.get_weights()))
    training.reset_optimizer(cot.optimizer1)  # an lr drop keeps the loss scale
    assert float(cot.optimizer1.dynamic_scale) > 0
