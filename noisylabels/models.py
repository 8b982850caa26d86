"""Network definitions for the noisy-label reproduction (Chen et al., ICML 2019).

One public entry point, :func:`build_model`, returns an *uncompiled* functional
Keras model with a softmax output; :data:`MODEL_NAMES` lists what it knows.

* ``resnet32`` (and ``resnet20`` / ``resnet44`` / ``resnet56``): the authors'
  own ResNet (``my_model.py`` of their repository, used by INCV and Co-teaching).
  It is *not* the Keras example's ``resnet_v1``: its projection shortcuts carry a
  BatchNormalization, and the stem convolution has no L2 penalty.
* ``resnet110``: the Keras example's pre-activation bottleneck ``resnet_v2``
  (depth 9n+2), which the authors used for the theory check (section 2).
* ``inception_resnet_v2``: ``keras.applications.InceptionResNetV2`` without
  pretrained weights (trained from scratch, as the paper's mini-WebVision run), needing
  inputs of at least 75x75; a Rescaling layer maps [0, 1] to its [-1, 1] inputs.
* ``cnn``: a small, fast network of our own for tiny inputs (8x8 sklearn digits)
  and quick CPU runs; it is not from the paper. ``cnn_x2`` / ``cnn_x4``: the same with
  2x / 4x the filters (4x / 16x the cost), enough capacity to memorise noisy labels.

The networks use only ``keras`` so any Keras 3 backend builds them (the training
algorithms live in coteaching.py and training.py). No
augmentation or rescaling layers are included: callers feed float32 images in [0, 1].
"""

import numbers

import keras
from keras import layers

MODEL_NAMES = ("cnn", "cnn_x2", "cnn_x4", "resnet20", "resnet32", "resnet44", "resnet56",
               "resnet110", "inception_resnet_v2")
# keras.applications.InceptionResNetV2's smallest input side (its native size is 299).
INCEPTION_MIN_SIZE = 75

# L2 factor of the authors' ResNet-32 block and shortcut convolutions.
WEIGHT_DECAY = 1e-4

# The authors' ResNet-32 left Conv2D/Dense at the Keras default initializer
# (glorot_uniform); only their copy of the Keras example (resnet110) asks for
# he_normal. We keep each network as its authors wrote it.
_V1_INIT = "glorot_uniform"
_V2_INIT = "he_normal"


def build_model(name, input_shape, num_classes):
    """Build one of the known networks.

    Parameters
    ----------
    name : str
        One of :data:`MODEL_NAMES` (case-insensitive, e.g. ``"ResNet32"``).
    input_shape : tuple of int
        ``(height, width, channels)``, all positive. Any spatial size works
        (pooling/strides use ``"same"`` padding); 8 or more is sensible.
    num_classes : int
        Number of output classes, at least 2.

    Returns
    -------
    keras.Model
        Functional model named ``name`` (lower case) mapping a float32 batch
        of shape ``(batch, *input_shape)`` to class probabilities
        ``(batch, num_classes)``. Not compiled.

    Raises
    ------
    ValueError
        If ``name`` is unknown, ``input_shape`` is not three positive ints, or
        ``num_classes`` is not an int >= 2.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
    input_shape = _check_input_shape(input_shape)
    num_classes = _check_num_classes(num_classes)

    inputs = keras.Input(shape=input_shape, name="image")
    if key in ("cnn", "cnn_x2", "cnn_x4"):
        features = _cnn_features(inputs, width=1 if key == "cnn" else int(key[-1]))
        init = "he_normal"
    elif key == "resnet110":
        features = _resnet_v2_features(inputs, depth=110)
        init = _V2_INIT
    elif key == "inception_resnet_v2":
        features = _inception_resnet_v2_features(inputs)
        init = "glorot_uniform"  # keras.applications' classifier default
    else:
        features = _resnet_v1_features(inputs, depth=int(key[len("resnet"):]))
        init = _V1_INIT
    logits = layers.Dense(num_classes, kernel_initializer=init, name="predictions")(features)
    # A separate float32 softmax: under a mixed precision policy (--precision) the
    # probabilities, hence every loss and the INCV / Co-teaching selections, stay float32.
    # Same numbers as Dense(activation="softmax") in float32, and the same weights.
    outputs = layers.Activation("softmax", dtype="float32", name="softmax")(logits)
    return keras.Model(inputs, outputs, name=key)


def _is_int(value):
    """True for Python and NumPy integers, but not bools (``True`` is an int)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_input_shape(input_shape):
    """Return ``input_shape`` as a tuple of three positive Python ints."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if shape is None or len(shape) != 3 or not all(_is_int(d) and d > 0 for d in shape):
        raise ValueError(
            "input_shape must be (height, width, channels) with three positive ints, "
            f"e.g. (32, 32, 3); got {input_shape!r}"
        )
    return tuple(int(d) for d in shape)


def _check_num_classes(num_classes):
    """Return ``num_classes`` as an int, requiring at least two classes."""
    if not _is_int(num_classes) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2; got {num_classes!r}")
    return int(num_classes)


def _conv(filters, kernel_size, strides, name, init, l2=True):
    """3x3/1x1 'same' convolution with optional L2 penalty on the kernel."""
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        kernel_initializer=init,
        kernel_regularizer=keras.regularizers.L2(WEIGHT_DECAY) if l2 else None,
        name=name,
    )


# --------------------------------------------------------------------------- #
# ResNet v1 (the authors' ResNet-32 and its 6n+2 siblings)                     #
# --------------------------------------------------------------------------- #
def _basic_block(x, filters, stride, name):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut, add, ReLU (authors' ``building_block``)."""
    shortcut = x
    # The authors project when the block downsamples or widens; they add BN
    # after the 1x1 projection (the Keras example does not).
    if stride > 1 or filters > x.shape[-1]:
        shortcut = _conv(filters, 1, stride, f"{name}_proj_conv", _V1_INIT)(x)
        shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = _conv(filters, 3, stride, f"{name}_conv1", _V1_INIT)(x)
    y = layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = layers.Activation("relu", name=f"{name}_relu1")(y)
    y = _conv(filters, 3, 1, f"{name}_conv2", _V1_INIT)(y)
    y = layers.BatchNormalization(name=f"{name}_bn2")(y)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Activation("relu", name=f"{name}_out")(y)


def _resnet_v1_features(inputs, depth):
    """Stem + 3 stages of (depth-2)/6 basic blocks (16/32/64 filters) + GAP."""
    blocks = (depth - 2) // 6
    # The authors' stem convolution carries no L2 penalty (only block and
    # shortcut convolutions do).
    x = _conv(16, 3, 1, "stem_conv", _V1_INIT, l2=False)(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, filters, stride, f"stage{stage + 1}_block{block + 1}")
    return layers.GlobalAveragePooling2D(name="avg_pool")(x)


# --------------------------------------------------------------------------- #
# ResNet v2 (Keras example, pre-activation bottleneck; the theory network)    #
# --------------------------------------------------------------------------- #
def _preact_conv(x, filters, kernel_size, strides, name, bn_relu=True):
    """[BN-ReLU-]conv, the pre-activation unit of ``resnet_layer(conv_first=False)``.

    The authors commented out the Keras example's L2 penalty in their copy, so
    ResNet-110 has no weight decay.
    """
    if bn_relu:
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        x = layers.Activation("relu", name=f"{name}_relu")(x)
    return _conv(filters, kernel_size, strides, f"{name}_conv", _V2_INIT, l2=False)(x)


def _resnet_v2_features(inputs, depth):
    """Stem + 3 stages of (depth-2)/9 bottleneck blocks + BN-ReLU + GAP."""
    blocks = (depth - 2) // 9
    filters_in = 16
    x = _conv(filters_in, 3, 1, "stem_conv", _V2_INIT, l2=False)(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    for stage in range(3):
        # Stage 0 widens 16 -> 64; later stages double and downsample.
        filters_out = filters_in * (4 if stage == 0 else 2)
        for block in range(blocks):
            name = f"stage{stage + 1}_block{block + 1}"
            first = block == 0
            stride = 2 if stage > 0 and first else 1
            # The stem already ends in BN-ReLU, so the very first block skips
            # its own pre-activation.
            y = _preact_conv(x, filters_in, 1, stride, f"{name}_a",
                             bn_relu=not (stage == 0 and first))
            y = _preact_conv(y, filters_in, 3, 1, f"{name}_b")
            y = _preact_conv(y, filters_out, 1, 1, f"{name}_c")
            if first:
                # Linear 1x1 projection (no BN) to match the new width/stride.
                x = _conv(filters_out, 1, stride, f"{name}_proj_conv", _V2_INIT, l2=False)(x)
            x = layers.Add(name=f"{name}_add")([x, y])
        filters_in = filters_out
    x = layers.BatchNormalization(name="final_bn")(x)
    x = layers.Activation("relu", name="final_relu")(x)
    # The example used AveragePooling2D(8) + Flatten, identical on 32x32
    # inputs; global pooling also works for other sizes.
    return layers.GlobalAveragePooling2D(name="avg_pool")(x)


def _inception_resnet_v2_features(inputs):
    """keras.applications.InceptionResNetV2 (no weights, no top, global average pooling)
    on ``inputs`` rescaled from [0, 1] to [-1, 1] (its ``preprocess_input``)."""
    h, w = inputs.shape[1:3]
    if min(h, w) < INCEPTION_MIN_SIZE:
        raise ValueError(
            f"inception_resnet_v2 needs images of at least {INCEPTION_MIN_SIZE}x"
            f"{INCEPTION_MIN_SIZE} pixels, got {h}x{w}: pass --image_size "
            f"{INCEPTION_MIN_SIZE} or more (its native size is 299) with an image folder "
            "--dataset")
    x = layers.Rescaling(2.0, offset=-1.0, name="to_inception_range")(inputs)
    base = keras.applications.InceptionResNetV2(include_top=False, weights=None,
                                                input_tensor=x, pooling="avg")
    return base.output


# --------------------------------------------------------------------------- #
# Small CNN (ours) for tiny inputs and quick CPU runs                          #
# --------------------------------------------------------------------------- #
def _cnn_features(inputs, width=1):
    """conv32 x2, max-pool, conv64 x2 (each conv-BN-ReLU), global average pooling;
    ``width`` multiplies the filters (cnn_x2: conv64 x2, conv128 x2).

    No dropout and no weight decay: the theory check needs a network that can
    fit (memorise) noisy labels. BN momentum is 0.9 rather than Keras' 0.99:
    runs on ~700 digits make only a few hundred steps, and with 0.99 the moving
    statistics lag the fast-changing weights, so the memorised labels are
    reproduced in training mode but not in inference mode (measured: 0.57 vs 1.0
    inference accuracy on 80%-noisy labels after 50 epochs).
    """
    x = inputs
    for i, filters in enumerate((32 * width, 32 * width, 64 * width, 64 * width), start=1):
        # BN follows immediately, so a conv bias would be redundant.
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                          kernel_initializer="he_normal", name=f"conv{i}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = layers.Activation("relu", name=f"relu{i}")(x)
        if i == 2:
            # 'same' padding keeps this valid for odd or very small inputs.
            x = layers.MaxPooling2D(2, padding="same", name="pool")(x)
    return layers.GlobalAveragePooling2D(name="avg_pool")(x)
