"""Network definitions for the noisy-label reproduction (Chen et al., ICML 2019).

One public entry point, :func:`build_model`, returns an *uncompiled* functional
Keras model with a softmax output; :data:`MODEL_NAMES` lists what it knows.

* ``resnet32`` (and ``resnet20`` / ``resnet44`` / ``resnet56``): the authors'
  own ResNet (``my_model.py`` of their repository, used by INCV and Co-teaching).
  It is *not* the Keras example's ``resnet_v1``: its projection shortcuts carry a
  BatchNormalization, and the stem convolution has no L2 penalty.
* ``resnet110``: the Keras example's pre-activation bottleneck ``resnet_v2``
  (depth 9n+2), which the authors used for the theory check (section 2).
* ``cnn``: a small, fast network of our own for tiny inputs (8x8 sklearn digits)
  and quick CPU runs; it is not from the paper.
* ``CoTeaching``: a ``keras.Model`` holding two networks, trained with the modified
  Co-teaching exchange in one fused, compiled training step (section 4).

The networks use only ``keras`` so any Keras 3 backend builds them; ``CoTeaching``'s
training step is written for the TensorFlow backend (``tf.GradientTape``). No
augmentation or rescaling layers are included: callers feed float32 images in [0, 1].
"""

import numbers

import keras
import tensorflow as tf
from keras import layers

MODEL_NAMES = ("cnn", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110")

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
    if key == "cnn":
        features = _cnn_features(inputs)
        init = "he_normal"
    elif key == "resnet110":
        features = _resnet_v2_features(inputs, depth=110)
        init = _V2_INIT
    else:
        features = _resnet_v1_features(inputs, depth=int(key[len("resnet"):]))
        init = _V1_INIT
    outputs = layers.Dense(
        num_classes, activation="softmax", kernel_initializer=init, name="predictions"
    )(features)
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


# --------------------------------------------------------------------------- #
# Small CNN (ours) for tiny inputs and quick CPU runs                          #
# --------------------------------------------------------------------------- #
def _cnn_features(inputs):
    """conv32 x2, max-pool, conv64 x2 (each conv-BN-ReLU), global average pooling.

    No dropout and no weight decay: the theory check needs a network that can
    fit (memorise) noisy labels. BN momentum is 0.9 rather than Keras' 0.99:
    runs on ~700 digits make only a few hundred steps, and with 0.99 the moving
    statistics lag the fast-changing weights, so the memorised labels are
    reproduced in training mode but not in inference mode (measured: 0.57 vs 1.0
    inference accuracy on 80%-noisy labels after 50 epochs).
    """
    x = inputs
    for i, filters in enumerate((32, 32, 64, 64), start=1):
        # BN follows immediately, so a conv bias would be redundant.
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                          kernel_initializer="he_normal", name=f"conv{i}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = layers.Activation("relu", name=f"relu{i}")(x)
        if i == 2:
            # 'same' padding keeps this valid for odd or very small inputs.
            x = layers.MaxPooling2D(2, padding="same", name="pool")(x)
    return layers.GlobalAveragePooling2D(name="avg_pool")(x)


# ----------------------------------------------------------------------------- Co-teaching
# Modified Co-teaching (Chen et al., ICML 2019, section 4 of PAPER.md) as one Keras model.
#
# :class:`CoTeaching` wraps two networks with softmax outputs and trains both in a single
# compiled training step (TensorFlow backend: ``tf.GradientTape`` inside the ``tf.function``
# that ``fit`` builds; no Python-side ``predict()`` and no numpy in the step).
#
# Algorithm, per mini-batch ``(x, y)`` of ``b`` samples whose first part comes from the selected
# set S (``from_s == 1``) and, after warm-up, whose other part comes from the candidate set C
# (``from_s == 0``):
#
# 1. ``b_S = sum(from_s)`` and ``keep = round(b_S * (1 - forget_rate))`` with banker's rounding
#    (as Python's ``round``), clipped to ``[1, b]`` (0 when ``b_S`` is 0: a batch without S samples
#    picks none, only the regularisation acts). ``forget_rate`` is a model variable that the
#    training script assigns every epoch (``e_S * min(1, epoch / Tk)``), so the step is traced once.
# 2. One training-mode forward pass of each network over the *whole* batch gives per-sample
#    cross-entropies ``ce1``, ``ce2`` w.r.t. the noisy labels.
# 3. Each network picks its ``keep`` smallest-loss samples of the whole batch (S and C together,
#    as the authors do after warm-up): ``top_k(-ce, keep)``.
# 4. The exchange: network 1 is updated on the mean ``ce1`` over the samples *network 2* picked,
#    network 2 on the mean ``ce2`` over the samples *network 1* picked (plus each network's own
#    regularisation losses). The picks are integer indices, hence constants for the gradient.
#    Each network has its own optimizer.
#
# Cross-entropy: ``keras.losses.sparse_categorical_crossentropy`` on the probabilities, i.e. the
# same loss as ``compile(loss="sparse_categorical_crossentropy")``: when the output comes from a
# softmax op Keras uses its logits directly (exact, no clipping); otherwise it clips the
# probabilities to ``[1e-7, 1 - 1e-7]``. The authors' ``log(p + 1e-8)`` is not used.
#
# Deviation from the authors' code: they called ``predict()`` (inference mode) on the batch to
# pick samples, then ``train_on_batch`` on the picked subset only, so BatchNorm used moving
# statistics for the selection and batch statistics of the picked subset for the update. Here the
# selection uses the training-mode outputs of the same forward pass over the whole batch and
# only the picked samples are back-propagated (as the official Co-teaching code of Han et al.
# does); BatchNorm batch statistics, and the moving averages, therefore come from the whole batch.
#
# The ``clean`` input flag (whether the noisy label is correct) is used only for the
# ``kept_clean1`` / ``kept_clean2`` tracking metrics; it never reaches a loss or a selection.
#
# Several devices (``tf.distribute.MirroredStrategy``, ``--devices all``; build and compile under
# ``strategy.scope()``): ``fit`` splits each global batch into contiguous shares, one per replica,
# and ``train_step`` runs on each share. Per replica r: ``keep_r = round(b_S_r * (1 - r))`` from
# the S samples of *its* share (clipped to ``[min(1, b_S_r), b_r]``: a share without S samples
# keeps none), and each network picks its ``keep_r`` smallest-loss samples *of that share*. The
# optimizers sum the replicas' gradients (all-reduce) and apply one identical update. Keras
# scales each replica's loss by ``1 / num_replicas_in_sync``
# (``keras.src.losses.loss.scale_loss_for_distribution``), i.e. averages per-replica means; here
# that would weight picks unequally, since the S part of a batch comes first (the first
# replicas get S samples only, the last ones the C part) and the ``keep_r`` differ. So each
# replica's exchange loss is its *sum* over its picks divided by the step's total
# ``K = sum_r keep_r`` (one all-reduce): the summed gradient is that of the mean over all K
# picks, as on one device; the regularisation losses (the same on every replica) are scaled by
# ``1 / num_replicas_in_sync`` as Keras does. Consequences: with ``forget_rate`` 0 and an all-S
# batch the step is the single-device step (even split or not); otherwise the selection is made
# per replica, not over the whole batch, and ``K`` differs from the single-device ``keep`` by
# rounding only: at most ``(R + 1) // 2`` samples for R replicas (1 on 2 GPUs), plus 1 per replica
# whose S share is so small that the clip to 1 applies. The metrics aggregate over all replicas
# (sums of totals and counts); ``keep`` logs ``K`` per step.

class CoTeaching(keras.Model):
    """Two networks trained with the Co-teaching exchange in one fused training step.

    Parameters
    ----------
    net1, net2 : keras.Model
        Two distinct, built networks mapping ``(b, h, w, ch)`` float32 images to class
        probabilities ``(b, num_classes)`` (softmax output), e.g. from ``models.build_model``.
        They must not share variables.
    **kwargs
        Passed to ``keras.Model`` (e.g. ``name``).

    Attributes
    ----------
    net1, net2 : keras.Model
        The wrapped networks (``call``/``predict`` use ``net1``).
    forget_rate : keras.Variable
        Non-trainable scalar, float64 (so that ``keep`` matches Python's
        ``round(b_S * (1 - r))`` even at exact ties, which a float32 ``r`` would miss, e.g.
        ``15 * (1 - 0.1)``), initial 0. Assign it each epoch: ``model.forget_rate.assign(r)``.
    optimizer1, optimizer2 : keras.optimizers.Optimizer
        Set by :meth:`compile`, already built on ``net1`` / ``net2`` trainable variables.

    Notes
    -----
    Training inputs (``fit``/``train_on_batch``): ``x`` is a dict
    ``{"image": (b, h, w, ch) float32, "from_s": (b,) float32 in {0, 1},
    "clean": (b,) float32 in {0, 1}}`` and ``y`` is ``(b,)`` (or ``(b, 1)``) integer noisy labels.
    ``from_s`` may be omitted (all samples then count as S); ``clean`` may be omitted (the
    ``kept_clean*`` metrics then stay at 0). A plain image tensor is accepted as ``x`` too (all S,
    no clean flags). Evaluation inputs: ``x`` is an image tensor or the same dict.

    Training metrics (reset every epoch): ``loss1``, ``loss2`` (exchange losses without
    regularisation, averaged over all picked samples of the epoch), ``acc1``, ``acc2`` (accuracy
    w.r.t. the noisy labels over the S samples of the epoch), ``keep`` (mean keep count per step),
    ``kept_clean1``, ``kept_clean2`` (fraction of clean samples among those net 1 / net 2 picked).
    Test metrics: ``accuracy1``, ``accuracy2`` (logged as ``val_accuracy1`` / ``val_accuracy2``
    by ``fit(validation_data=...)``).

    Under ``tf.distribute.MirroredStrategy`` (construct the networks, this model and its
    optimizers, and compile, inside ``strategy.scope()``) each replica runs ``train_step`` on its
    contiguous share of the global batch: its keep count ``keep_r = round(b_S_r (1 - r))`` comes
    from the S samples of its own share, and its small-loss picks are made within that share.
    The sum ``K`` of the ``keep_r`` can differ from the single-device ``round(b_S (1 - r))`` by a
    few samples (rounding: at most ``(R + 1) // 2`` for R replicas). Each replica's exchange loss
    is its sum over its picks divided by ``K`` (regularisation: scaled by ``1 / R``, as Keras
    does), and the gradients are summed across replicas: the update is that of the mean over
    all picks, so with ``forget_rate`` 0 on an all-S batch it equals the single-device one.
    Metrics are aggregated over all replicas; ``keep`` is ``K``. BatchNorm layers see the
    replica's share only unless made synchronised (``utils.sync_batchnorm``).
    """

    def __init__(self, net1, net2, **kwargs):
        super().__init__(**kwargs)
        if net1 is net2:
            raise ValueError("net1 and net2 must be two different networks")
        shared = {id(v) for v in net1.weights} & {id(v) for v in net2.weights}
        if shared:
            raise ValueError("net1 and net2 must not share variables")
        self.net1 = net1
        self.net2 = net2
        # A variable, not a Python float: assigning it does not retrace the step.
        self.forget_rate = self.add_weight(
            shape=(), initializer="zeros", dtype="float64", trainable=False, name="forget_rate"
        )
        self.optimizer1 = None
        self.optimizer2 = None

        mean = keras.metrics.Mean
        self.loss1_tracker = mean(name="loss1")
        self.loss2_tracker = mean(name="loss2")
        self.acc1_tracker = mean(name="acc1")
        self.acc2_tracker = mean(name="acc2")
        self.keep_tracker = mean(name="keep")
        self.kept_clean1_tracker = mean(name="kept_clean1")
        self.kept_clean2_tracker = mean(name="kept_clean2")
        self.test_acc1_tracker = mean(name="accuracy1")
        self.test_acc2_tracker = mean(name="accuracy2")
        self._train_trackers = [
            self.loss1_tracker,
            self.loss2_tracker,
            self.acc1_tracker,
            self.acc2_tracker,
            self.keep_tracker,
            self.kept_clean1_tracker,
            self.kept_clean2_tracker,
        ]
        self._test_trackers = [self.test_acc1_tracker, self.test_acc2_tracker]
        # The nets are built (functional); nothing of this wrapper needs a build step.
        self.built = True

    @property
    def metrics(self):
        """All trackers, so that Keras resets them at the start of each epoch / evaluate."""
        return self._train_trackers + self._test_trackers

    def compile(self, optimizer1, optimizer2, **kwargs):
        """Configure training with one optimizer per network.

        Parameters
        ----------
        optimizer1, optimizer2 : keras.optimizers.Optimizer or str
            Optimizers of ``net1`` and ``net2`` (must be two different instances). Both are
            built here so their ``.variables`` exist before training (checkpoint restore).
        **kwargs
            Passed to ``keras.Model.compile`` (e.g. ``run_eagerly``, ``steps_per_execution``).
            ``jit_compile`` defaults to False: the keep count is data-dependent, which XLA's
            ``top_k`` cannot handle. ``optimizer``, ``loss`` and ``metrics`` are not used.

        Notes
        -----
        ``self.optimizer`` stays None (no third, unused optimizer is created), so callbacks that
        act on ``model.optimizer`` (``LearningRateScheduler``, ``ReduceLROnPlateau``) do not
        apply; change ``optimizer1/2.learning_rate`` directly or re-compile.
        """
        kwargs.setdefault("jit_compile", False)
        super().compile(optimizer=None, **kwargs)
        strategy = self.distribute_strategy
        with strategy.scope():  # the optimizer slots must be mirrored like the weights
            optimizer1 = keras.optimizers.get(optimizer1)
            optimizer2 = keras.optimizers.get(optimizer2)
            if optimizer1 is optimizer2:
                raise ValueError("optimizer1 and optimizer2 must be two different instances")
            for opt in (optimizer1, optimizer2):
                # Keras' TF optimizers remember the strategy they were created under.
                created = getattr(opt, "_distribution_strategy", strategy)
                if created is not strategy:
                    raise ValueError(
                        "the optimizers must be created under the same strategy.scope() as "
                        "the model (tf.distribute): create them inside the scope")
            optimizer1.build(self.net1.trainable_variables)
            optimizer2.build(self.net2.trainable_variables)
        self.optimizer1 = optimizer1
        self.optimizer2 = optimizer2

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Nothing to build: the networks are built and ``compile`` builds the optimizers.

        Keras' TensorFlow trainer would, under tf.distribute, average the first batch of each
        ``fit``/``evaluate`` across the replicas just to learn its shapes, which fails when the
        batch does not split evenly (e.g. an S batch plus an odd-sized C batch).
        """
        return None

    @staticmethod
    def _image(x):
        return x["image"] if isinstance(x, dict) else x

    def call(self, x, training=False):
        """Net 1's class probabilities ``(b, num_classes)`` for an image batch or input dict."""
        return self.net1(self._image(x), training=training)

    def train_step(self, data):
        """One Co-teaching step on a batch; see the module docstring.

        Parameters
        ----------
        data : tuple
            ``(x, y)``: ``x`` the input dict (see class Notes), ``y`` ``(b,)`` int noisy labels.
            A sample-weight element, if any, is ignored.

        Returns
        -------
        dict
            Current values of the training metrics (running means over the epoch, over all
            replicas).

        Notes
        -----
        Under ``tf.distribute`` this runs once per replica on its share of the batch (see the
        class Notes): ``b``, ``b_S``, ``keep`` and the picks are the replica's own.
        """
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        image = self._image(x)
        y = tf.reshape(tf.cast(y, tf.int32), [-1])
        b = tf.shape(y)[0]
        if isinstance(x, dict) and "from_s" in x:
            from_s = tf.reshape(tf.cast(x["from_s"], tf.float32), [-1])
        else:
            from_s = tf.ones([b], tf.float32)
        clean = None
        if isinstance(x, dict) and "clean" in x:
            clean = tf.reshape(tf.cast(x["clean"], tf.float32), [-1])

        # keep = round(b_S * (1 - r)) from the S part only; float64 and tf.round (half to even)
        # reproduce Python's round() on the same numbers. At least one pick when there are S
        # samples; none for a batch (or replica share) without any, or an empty share.
        b_s = tf.reduce_sum(tf.cast(from_s, tf.float64))
        keep = tf.cast(tf.round(b_s * (1.0 - tf.cast(self.forget_rate, tf.float64))), tf.int32)
        keep = tf.clip_by_value(keep, tf.minimum(1, tf.cast(b_s, tf.int32)), b)
        n_pick = tf.cast(keep, tf.float32)
        # Picks of the whole step: under tf.distribute, the sum of the replicas' keep counts.
        n_step = n_pick
        if replicas > 1:
            n_step = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, n_pick)

        vars1 = self.net1.trainable_variables
        vars2 = self.net2.trainable_variables
        with tf.GradientTape() as tape:
            # One training-mode pass per network over the whole batch (S and C parts).
            p1 = self.net1(image, training=True)
            p2 = self.net2(image, training=True)
            ce1 = keras.losses.sparse_categorical_crossentropy(y, p1)
            ce2 = keras.losses.sparse_categorical_crossentropy(y, p2)
            # Small-loss picks over the whole batch. Integer indices of stopped losses: the
            # selection is a constant for the gradient.
            _, pick1 = tf.math.top_k(-tf.stop_gradient(ce1), k=keep)
            _, pick2 = tf.math.top_k(-tf.stop_gradient(ce2), k=keep)
            pick1 = tf.stop_gradient(pick1)
            pick2 = tf.stop_gradient(pick2)
            # The exchange: each network learns from the samples its peer picked (mean over the
            # picks; 0 when there are none).
            sum1 = tf.reduce_sum(tf.gather(ce1, pick2))
            sum2 = tf.reduce_sum(tf.gather(ce2, pick1))
            loss1 = tf.math.divide_no_nan(sum1, n_pick)
            loss2 = tf.math.divide_no_nan(sum2, n_pick)
            reg = self._reg_loss(self.net1) + self._reg_loss(self.net2)
            if replicas == 1:
                # total1 = loss1 + reg1 depends only on net1's variables and total2 only on
                # net2's, so the gradient of their sum w.r.t. each net is that net's own
                # gradient: one backward pass.
                total = loss1 + loss2 + reg
            else:
                # The optimizers *sum* the replicas' gradients. Keras scales each replica's
                # loss by 1 / replicas (keras.src.losses.loss.scale_loss_for_distribution),
                # which averages per-replica means; here the replicas' keep counts differ
                # (the S part of a batch comes first, so the last replicas hold the C part),
                # and a mean of means would weight their picks unequally. So each replica's
                # exchange sum is divided by the step's total keep count: the summed gradient
                # is that of the mean over all picks, as on one device. The regularisation
                # losses, the same on every replica, are scaled by 1 / replicas as Keras does.
                total = (tf.math.divide_no_nan(sum1 + sum2, n_step)
                         + reg * (1.0 / replicas))
        grads = tape.gradient(total, vars1 + vars2)
        self.optimizer1.apply_gradients(zip(grads[: len(vars1)], vars1))
        self.optimizer2.apply_gradients(zip(grads[len(vars1):], vars2))

        self.loss1_tracker.update_state(loss1, sample_weight=n_pick)
        self.loss2_tracker.update_state(loss2, sample_weight=n_pick)
        # Training accuracy w.r.t. the noisy labels on the S part (weights 0 drop C samples).
        self.acc1_tracker.update_state(self._correct(y, p1), sample_weight=from_s)
        self.acc2_tracker.update_state(self._correct(y, p2), sample_weight=from_s)
        self.keep_tracker.update_state(n_step)  # under tf.distribute: the sum over replicas
        if clean is not None:
            # Tracking only: per-sample means over all picks of the epoch.
            self.kept_clean1_tracker.update_state(tf.gather(clean, pick1))
            self.kept_clean2_tracker.update_state(tf.gather(clean, pick2))
        return self._results(self._train_trackers)

    def test_step(self, data):
        """Accuracy of both networks (inference mode) on a batch.

        Parameters
        ----------
        data : tuple
            ``(x, y)`` or ``(x, y, sample_weight)``; ``x`` an image tensor ``(b, h, w, ch)`` or
            the input dict, ``y`` ``(b,)`` int labels.

        Returns
        -------
        dict
            ``{"accuracy1": ..., "accuracy2": ...}`` (running means over the evaluation).
        """
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        image = self._image(x)
        y = tf.reshape(tf.cast(y, tf.int32), [-1])
        p1 = self.net1(image, training=False)
        p2 = self.net2(image, training=False)
        self.test_acc1_tracker.update_state(self._correct(y, p1), sample_weight=sample_weight)
        self.test_acc2_tracker.update_state(self._correct(y, p2), sample_weight=sample_weight)
        return self._results(self._test_trackers)

    @staticmethod
    def _results(trackers):
        """``{name: result}`` of ``Mean`` trackers, over all replicas under tf.distribute.

        Each replica updates its own copy of a metric's ``total`` and ``count``; Keras averages
        the replicas' returned values, which for weighted means is not the mean over all
        samples. So the replicas' totals and counts are summed first (one all-reduce).
        """
        ctx = tf.distribute.get_replica_context()
        if ctx is None or ctx.num_replicas_in_sync == 1:
            return {m.name: m.result() for m in trackers}
        local = tf.stack([tf.stack([tf.cast(m.total, tf.float32), tf.cast(m.count, tf.float32)])
                          for m in trackers])
        summed = ctx.all_reduce(tf.distribute.ReduceOp.SUM, local)
        values = tf.math.divide_no_nan(summed[:, 0], summed[:, 1])
        return {m.name: values[i] for i, m in enumerate(trackers)}

    @staticmethod
    def _correct(y, probs):
        """(b,) float32, 1 where argmax(probs) == y."""
        return tf.cast(tf.equal(tf.argmax(probs, axis=-1, output_type=tf.int32), y), tf.float32)

    @staticmethod
    def _reg_loss(net):
        """Sum of the network's regularisation losses (0 if it has none)."""
        losses = net.losses
        if not losses:
            return tf.constant(0.0, tf.float32)
        return tf.add_n([tf.cast(v, tf.float32) for v in losses])
