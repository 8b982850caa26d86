"""Tests for models.py: shapes, parameter counts, validation, seeded initialisation."""

import os
import sys

import keras
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from noisylabels.models import MODEL_NAMES, build_model  # noqa: E402


def _trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _forward(model, shape, seed=0):
    x = np.random.default_rng(seed).random(shape, dtype=np.float32)
    return keras.ops.convert_to_numpy(model(x, training=False))


@pytest.fixture(scope="module")
def resnet32():
    return build_model("resnet32", (32, 32, 3), 10)


@pytest.fixture(scope="module")
def resnet110():
    return build_model("resnet110", (32, 32, 3), 10)


def test_model_names():
    assert MODEL_NAMES == ("cnn", "cnn_x2", "cnn_x4", "resnet20", "resnet32", "resnet44",
                           "resnet56", "resnet110", "inception_resnet_v2")


def test_resnet32_shape_and_softmax(resnet32):
    assert resnet32.name == "resnet32"
    probs = _forward(resnet32, (2, 32, 32, 3))
    assert probs.shape == (2, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs >= 0).all()


def test_resnet32_parameter_count(resnet32):
    # Authors' ResNet-32 (BN after the 1x1 projection shortcuts).
    assert resnet32.count_params() == 470_602
    assert _trainable_count(resnet32) == 468_138
    # The 2,464 non-trainable weights are the BN moving means/variances.
    assert resnet32.count_params() - _trainable_count(resnet32) == 2_464


def test_resnet32_l2_placement(resnet32):
    # L2 on the 30 block convolutions and the 2 projection convolutions; not on
    # the stem convolution nor the dense layer (as in the authors' code).
    penalised = sorted(
        layer.name for layer in resnet32.layers if getattr(layer, "kernel_regularizer", None)
    )
    assert len(penalised) == 32
    assert "stem_conv" not in penalised and "predictions" not in penalised
    assert len(resnet32.losses) == 32
    assert {"stage2_block1_proj_conv", "stage3_block1_proj_conv"} <= set(penalised)


def test_resnet110_shape_and_parameter_count(resnet110):
    assert resnet110.name == "resnet110"
    assert resnet110.count_params() == 3_323_210
    assert _trainable_count(resnet110) == 3_302_442
    # The authors removed the Keras example's L2 penalty in their copy.
    assert len(resnet110.losses) == 0
    probs = _forward(resnet110, (2, 32, 32, 3))
    assert probs.shape == (2, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_cnn_digits_shape_and_parameter_count():
    model = build_model("cnn", (8, 8, 1), 10)
    assert model.name == "cnn"
    assert model.count_params() == 66_218
    assert _trainable_count(model) == 65_834
    probs = _forward(model, (2, 8, 8, 1))
    assert probs.shape == (2, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_cnn_cifar_shape():
    model = build_model("cnn", (32, 32, 3), 10)
    assert model.count_params() == 66_794
    assert _forward(model, (2, 32, 32, 3)).shape == (2, 10)


@pytest.mark.parametrize("name, params, trainable", [
    # conv weights 9 * (3*w1 + w1*w1 + w1*w2 + w2*w2) for filters (w1, w1, w2, w2), BN 4 per
    # channel (2 trainable), dense 10 * (w2 + 1)
    ("cnn_x2", 259_776 + 4 * 384 + 1_290, 259_776 + 2 * 384 + 1_290),
    ("cnn_x4", 1_035_648 + 4 * 768 + 2_570, 1_035_648 + 2 * 768 + 2_570),
])
def test_wider_cnns_multiply_the_filters(name, params, trainable):
    model = build_model(name, (8, 8, 3), 10)
    assert model.name == name and model.count_params() == params
    assert _trainable_count(model) == trainable
    assert [layer.filters for layer in model.layers if hasattr(layer, "filters")] == [
        f * int(name[-1]) for f in (32, 32, 64, 64)]
    assert _forward(model, (2, 8, 8, 3)).shape == (2, 10)


@pytest.mark.parametrize(
    "name, depth_params",
    [("resnet20", 274_826), ("resnet44", 666_378), ("resnet56", 862_154)],
)
def test_other_v1_depths(name, depth_params):
    model = build_model(name, (32, 32, 3), 10)
    assert model.name == name
    assert model.count_params() == depth_params


@pytest.mark.parametrize(
    "name, shape, classes",
    [("resnet20", (8, 8, 1), 10), ("resnet20", (28, 20, 5), 3), ("cnn", (9, 9, 2), 2)],
)
def test_other_input_shapes(name, shape, classes):
    model = build_model(name, shape, classes)
    assert _forward(model, (3, *shape)).shape == (3, classes)


def test_name_is_case_insensitive():
    assert build_model("CNN", (8, 8, 1), 10).name == "cnn"


def test_model_is_not_compiled():
    assert not build_model("cnn", (8, 8, 1), 10).compiled


def test_unknown_name():
    with pytest.raises(ValueError, match=r"unknown model 'foo'; choose one of: cnn, .*resnet110"):
        build_model("foo", (32, 32, 3), 10)
    with pytest.raises(ValueError, match="unknown model"):
        build_model(None, (32, 32, 3), 10)


@pytest.mark.parametrize("classes", [1, 0, -3, 2.0, "10", True, None])
def test_bad_num_classes(classes):
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        build_model("cnn", (8, 8, 1), classes)


@pytest.mark.parametrize(
    "shape",
    [(32, 32), (32, 32, 3, 1), (0, 32, 3), (32, -1, 3), (32.0, 32, 3), (8, 8, True), None, 32],
)
def test_bad_input_shape(shape):
    with pytest.raises(ValueError, match=r"input_shape must be \(height, width, channels\)"):
        build_model("cnn", shape, 10)


def test_accepts_numpy_ints_and_lists():
    model = build_model("cnn", [np.int64(8), 8, 1], np.int32(4))
    assert model.output_shape == (None, 4)


@pytest.mark.parametrize("name, shape", [("cnn", (8, 8, 1)), ("resnet32", (32, 32, 3))])
def test_seeded_initialisation(name, shape):
    def weights(seed):
        keras.utils.set_random_seed(seed)
        return [keras.ops.convert_to_numpy(w) for w in build_model(name, shape, 10).weights]

    first, again, other = weights(123), weights(123), weights(456)
    assert len(first) == len(again) == len(other)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    # Kernels differ for another seed (BN/bias initial values are constants).
    assert any(a.shape == b.shape and not np.array_equal(a, b) for a, b in zip(first, other))
    kernels = [i for i, a in enumerate(first) if a.ndim > 1]
    assert all(not np.array_equal(first[i], other[i]) for i in kernels)
