"""Input pipelines: how the training images reach the networks.

``make_train_dataset`` (one network), ``make_coteaching_dataset`` (S batches joined by C
batches, the modified Co-teaching's input) and ``make_paired_dataset`` (INCV's two runs side
by side). Every pipeline draws epoch e's order from (seed, e) alone, so a resumed run sees
the batches of the uninterrupted one.

Two implementations of each, ``pipeline=``:

* ``"tf.data"`` (the default on the TensorFlow backend): a tf.data graph, the authors'
  augmentation as Keras preprocessing layers mapped in parallel.
* ``"numpy"`` (the default on JAX and PyTorch, which must not import TensorFlow): a
  ``keras.utils.PyDataset`` that gathers each batch from the in-memory arrays with numpy,
  the same augmentation drawn per batch from (seed, epoch, step) (:func:`augment_batch`).
  Its epoch counter is advanced by a callback that ``fit`` must get:
  ``fit(ds, callbacks=[..., *epoch_callbacks(ds)])`` (Keras' own ``on_epoch_*`` hooks of
  a PyDataset also fire when ``fit`` peeks at a batch to build a model, so they cannot
  count epochs).

The rules are the same in both; the random streams differ (numpy Generators vs TensorFlow's
stateless ops), so the two give different, equally distributed, orders and shifts.

TensorFlow and Keras are imported inside the functions, so that the scripts can parse their
flags (and print ``--help``) before Keras loads.
"""

import zlib

import numpy as np

AUGMENTATIONS = ("auto", "standard", "shift", "none")
PIPELINES = ("auto", "tf.data", "numpy")
# The authors' shift: up to 4 of 32 pixels (Keras 2 ImageDataGenerator's 0.125).
SHIFT_FRACTION = 0.125


def resolve_pipeline(pipeline="auto"):
    """"auto" -> "tf.data" on the TensorFlow backend, else "numpy"."""
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be one of {PIPELINES}, got {pipeline!r}")
    if pipeline != "auto":
        return pipeline
    import keras

    return "tf.data" if keras.backend.backend() == "tensorflow" else "numpy"


def epoch_callbacks(ds):
    """The callbacks ``fit(ds)`` needs for ``ds`` (the numpy pipeline's epoch counter;
    none for tf.data)."""
    return list(getattr(ds, "epoch_callbacks", ()))

def resolve_augmentation(kind, dataset):
    """"auto" -> "none" for 8x8 digits (a 1-pixel shift is 12% of the image and flipped
    digits are other digits), else the authors' "standard" shift + flip."""
    if kind not in AUGMENTATIONS:
        raise ValueError(f"--augment must be one of {AUGMENTATIONS}, got '{kind}'")
    if kind == "auto":
        return "none" if dataset == "digits" else "standard"
    return kind


def make_augmenter(kind, *, seed):
    """Keras preprocessing layers for the authors' augmentation, or None.

    "standard": random shift up to 4/32 of height and width (nearest fill, as Keras 2's
    ImageDataGenerator did) and horizontal flip; "shift": the shift only; "none": None.
    """
    if kind == "none":
        return None
    import keras

    layers = [keras.layers.RandomTranslation(0.125, 0.125, fill_mode="nearest", seed=seed)]
    if kind == "standard":
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed + 1))
    elif kind != "shift":
        raise ValueError(f"unknown augmentation '{kind}'")
    return keras.Sequential(layers, name=f"augment_{kind}")


def _pixels_in_memory(x, chunk=4096):
    """``x`` as one in-memory tensor and the per-batch function that restores float32.

    float32 images that are exactly k/255 (CIFAR, uint8 files) are kept as uint8 (a quarter
    of the memory): ``cast(q) / 255`` in TensorFlow rounds exactly as ``load_dataset``'s numpy
    division did, so the model sees the same bits. Anything else is kept as it is.
    """
    import tensorflow as tf

    x = np.asarray(x)
    if x.dtype == np.float32 and x.size:
        q = np.empty(x.shape, np.uint8)
        for i in range(0, len(x), chunk):  # chunked: no full-size float temporary
            part = x[i:i + chunk]
            q[i:i + chunk] = np.clip(np.rint(part * 255), 0, 255)
            if not np.array_equal(q[i:i + chunk].astype(np.float32) / np.float32(255), part):
                break
        else:
            return tf.constant(q), lambda b: tf.cast(b, tf.float32) / 255.0
    return tf.constant(x), lambda b: b


def _epoch_orders(first_epoch):
    """A dataset whose k-th iterator (counting from 0) yields the one element
    ``first_epoch + k``: the epoch that iterator serves.

    Keras' ``fit`` makes a new iterator of a finite dataset for every epoch, so a pipeline
    that draws epoch e's order from (seed, e) alone (stateless) gives every epoch the same
    batches in an uninterrupted run and in one resumed at epoch ``first_epoch`` of the same
    phase, where tf.data's own reshuffling would start again from its first order.
    """
    import tensorflow as tf

    counter = tf.Variable(int(first_epoch) - 1, dtype=tf.int64, trainable=False)
    return tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).map(
        lambda _: counter.assign_add(1))


def _permutation(idx, seed, epoch, shuffle=True):
    """``idx`` in epoch ``epoch``'s order: a permutation drawn from (seed, epoch) alone."""
    import tensorflow as tf

    if not shuffle:
        return idx
    return tf.random.experimental.stateless_shuffle(
        idx, seed=tf.stack([tf.constant(int(seed), tf.int64), epoch]))


def make_train_dataset(x, y, *, batch_size, augment="none", seed=0, shuffle=True,
                       first_epoch=0, pipeline="auto"):
    """Shuffle each epoch, batch, augment in the pipeline (tf.data: prefetch too).

    The images stay in memory once (as uint8 when they are exactly k/255, as CIFAR's are,
    converted back per batch bit for bit); the pipeline shuffles indices and gathers each
    batch, without a full-size shuffle buffer (a second copy of the data) or per-image work.
    Each epoch's order is drawn from (``seed``, epoch) alone, counting epochs from
    ``first_epoch`` (see :func:`_epoch_orders`): pass the number of epochs already done
    when resuming, and the resumed run sees the batches the uninterrupted one saw.
    ``pipeline``: see the module docstring (the numpy one needs :func:`epoch_callbacks`).
    """
    if resolve_pipeline(pipeline) == "numpy":
        return _make_train_numpy(x, y, batch_size=batch_size, augment=augment, seed=seed,
                                 shuffle=shuffle, first_epoch=first_epoch)
    import tensorflow as tf

    pixels, to_float = _pixels_in_memory(x)
    labels = tf.constant(y)
    idx = tf.range(len(x), dtype=tf.int64)
    ds = _epoch_orders(first_epoch).flat_map(
        lambda e: tf.data.Dataset.from_tensor_slices(_permutation(idx, seed, e, shuffle)))
    augmenter = make_augmenter(augment, seed=seed)

    def gather(idx):
        xb = to_float(tf.gather(pixels, idx))
        if augmenter is not None:
            xb = augmenter(xb, training=True)
        return xb, tf.gather(labels, idx)

    ds = ds.batch(batch_size).apply(tf.data.experimental.assert_cardinality(
        -(-len(x) // batch_size)))
    return ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def make_coteaching_dataset(x, y, clean, s_idx, c_idx, *, batch_size, c_batch_size,
                            augment="none", seed=0, first_epoch=0, pipeline="auto"):
    """Batches for (modified) Co-teaching: each epoch is one pass over S in batches of
    ``batch_size``; when ``c_batch_size`` > 0 each S batch is joined by ``c_batch_size``
    samples from C, read from a fresh permutation of C each epoch (cycling through further
    permutations if C is smaller than the epoch needs), as the authors' loop made a new C
    iterator every epoch (arXiv:1905.05040, Algorithm 2; their INCV_main.py).

    Yields ``({"image": (b, h, w, ch), "from_s": (b,) float32, "clean": (b,) float32}, y)``
    with the S part first. ``clean`` (true label == noisy label) is for tracking only.
    Like :func:`make_train_dataset` it gathers from one in-memory copy of ``x`` and draws
    epoch e's orders from (``seed``, e) alone, counting from ``first_epoch``.
    """
    if resolve_pipeline(pipeline) == "numpy":
        return _make_coteaching_numpy(x, y, clean, s_idx, c_idx, batch_size=batch_size,
                                      c_batch_size=c_batch_size, augment=augment, seed=seed,
                                      first_epoch=first_epoch)
    import tensorflow as tf

    pixels, to_float = _pixels_in_memory(x)
    labels, clean_f = tf.constant(y), tf.constant(np.asarray(clean, np.float32))
    s = tf.constant(np.asarray(s_idx, np.int64))
    c = tf.constant(np.asarray(c_idx, np.int64))
    steps = -(-len(s_idx) // batch_size)
    with_c = c_batch_size > 0 and len(c_idx) > 0
    passes = -(-steps * c_batch_size // len(c_idx)) if with_c else 0

    def epoch(e):
        s_batches = tf.data.Dataset.from_tensor_slices(_permutation(s, seed, e)).batch(
            batch_size)
        if not with_c:
            return s_batches.map(lambda i: (i, tf.ones_like(i, tf.float32)))
        c_order = tf.concat([_permutation(c, seed + 1, e * passes + p) for p in range(passes)],
                            0)[:steps * c_batch_size]
        c_batches = tf.data.Dataset.from_tensor_slices(tf.reshape(c_order,
                                                                  [steps, c_batch_size]))
        return tf.data.Dataset.zip(s_batches, c_batches).map(
            lambda si, ci: (tf.concat([si, ci], 0),
                            tf.concat([tf.ones_like(si, tf.float32),
                                       tf.zeros_like(ci, tf.float32)], 0)))

    ds = _epoch_orders(first_epoch).flat_map(epoch).apply(
        tf.data.experimental.assert_cardinality(steps))
    augmenter = make_augmenter(augment, seed=seed)

    def to_inputs(idx, from_s):
        xb = to_float(tf.gather(pixels, idx))
        if augmenter is not None:
            xb = augmenter(xb, training=True)
        return ({"image": xb, "from_s": from_s, "clean": tf.gather(clean_f, idx)},
                tf.gather(labels, idx))

    return ds.map(to_inputs, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def make_paired_dataset(x1, y1, x2, y2, *, batch_size, augment="none", seed=0,
                        pipeline="auto"):
    """Batches for two networks trained side by side (``paired.PairedNetworks``).

    Each side is exactly :func:`make_train_dataset` of its own data (shuffle with ``seed``,
    batch, augment with its own augmenter seeded with ``seed``), as the sequential runs
    build it. An epoch is ``ceil(max(n1, n2) / batch_size)`` steps: the side with fewer
    batches (at most one fewer: INCV's halves differ by one sample at most) cycles into its
    next shuffled pass for the missing step(s), so every step trains both networks. With
    ``n1 == n2`` each side yields, epoch after epoch, the batches its sequential run sees.

    Yields ``((x1_batch, x2_batch), (y1_batch, y2_batch))``; the two sides' last batches
    may differ in size.
    """
    if resolve_pipeline(pipeline) == "numpy":
        return _make_paired_numpy(x1, y1, x2, y2, batch_size=batch_size, augment=augment,
                                  seed=seed)
    import tensorflow as tf

    sides = [make_train_dataset(x, y, batch_size=batch_size, augment=augment, seed=seed)
             for x, y in ((x1, y1), (x2, y2))]
    steps = max(-(-len(y1) // batch_size), -(-len(y2) // batch_size))
    sides = [ds.repeat().take(steps) for ds in sides]
    return tf.data.Dataset.zip(tuple(sides)).map(
        lambda a, b: ((a[0], b[0]), (a[1], b[1]))).prefetch(tf.data.AUTOTUNE)


# --- numpy pipeline (every backend; the default on JAX and PyTorch) ------------------------

def _stream(seed, purpose, *keys):
    """A numpy Generator drawn from (seed, purpose, keys) alone (stateless per batch)."""
    return np.random.default_rng([int(seed), zlib.crc32(purpose.encode()),
                                  *(int(k) for k in keys)])


def _shift_axis(x, shift, axis):
    """Translate each image of ``x`` by ``shift[i]`` pixels (continuous) along ``axis``
    (1: rows, 2: columns): linear interpolation between the two nearest source pixels,
    source coordinates outside the image clamped to its edge (nearest fill)."""
    n, length = x.shape[0], x.shape[axis]
    src = np.arange(length, dtype=np.float32)[None, :] - shift[:, None].astype(np.float32)
    src = np.clip(src, 0.0, length - 1.0)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, length - 1)
    frac = (src - lo).astype(x.dtype)
    shape = [n, 1, 1, 1]
    shape[axis] = length
    lo, hi, frac = (a.reshape(shape) for a in (lo, hi, frac))
    full = list(x.shape)
    lo_v = np.take_along_axis(x, np.broadcast_to(lo, full), axis)
    hi_v = np.take_along_axis(x, np.broadcast_to(hi, full), axis)
    return lo_v + frac * (hi_v - lo_v)


def augment_batch(xb, kind, rng):
    """The authors' augmentation of one batch in numpy.

    Parameters
    ----------
    xb : (b, h, w, ch) float32
    kind : {"standard", "shift", "none"}
        "standard": a random shift of up to ``SHIFT_FRACTION`` of the height and of the
        width (uniform, continuous, bilinear, nearest fill: as Keras'
        ``RandomTranslation(0.125, 0.125, fill_mode="nearest")``), then a horizontal flip
        with probability 1/2; "shift": the shift only.
    rng : numpy.random.Generator
        The batch's stream (e.g. from (seed, epoch, step)).

    Returns
    -------
    (b, h, w, ch) float32, a new array
    """
    if kind == "none":
        return xb
    if kind not in ("standard", "shift"):
        raise ValueError(f"unknown augmentation '{kind}'")
    b, h, w = xb.shape[:3]
    dy = rng.uniform(-SHIFT_FRACTION, SHIFT_FRACTION, b) * h
    dx = rng.uniform(-SHIFT_FRACTION, SHIFT_FRACTION, b) * w
    out = _shift_axis(_shift_axis(xb, dy, 1), dx, 2)
    if kind == "standard":
        flip = rng.random(b) < 0.5
        out[flip] = out[flip, :, ::-1]
    return np.ascontiguousarray(out, dtype=np.float32)


def _pixels_numpy(x, chunk=4096):
    """numpy counterpart of :func:`_pixels_in_memory`: uint8 when exactly k/255 (the float32
    division restores the same bits), else as it is."""
    x = np.asarray(x)
    if x.dtype == np.float32 and x.size:
        q = np.empty(x.shape, np.uint8)
        for i in range(0, len(x), chunk):
            part = x[i:i + chunk]
            q[i:i + chunk] = np.clip(np.rint(part * 255), 0, 255)
            if not np.array_equal(q[i:i + chunk].astype(np.float32) / np.float32(255), part):
                break
        else:
            return q, lambda b: b.astype(np.float32) / np.float32(255)
    return x, lambda b: b


def _permutation_np(idx, seed, epoch, shuffle=True, purpose="order"):
    """``idx`` (numpy) in epoch ``epoch``'s order, drawn from (seed, epoch) alone."""
    idx = np.asarray(idx)
    if not shuffle:
        return idx
    return _stream(seed, purpose, epoch).permutation(idx)


_CLASSES = {}


def _epoch_batches_class():
    """``EpochBatches``, defined on first use (it subclasses Keras' PyDataset, and Keras may
    only be imported once the backend is chosen)."""
    if "EpochBatches" in _CLASSES:
        return _CLASSES["EpochBatches"]
    import keras

    class _EpochCounter(keras.callbacks.Callback):
        """Sets the pipeline's epoch at each epoch ``fit`` begins (its n-th call: epoch
        ``first_epoch + n``)."""

        def __init__(self, ds):
            super().__init__()
            self.ds, self.calls = ds, 0

        def on_epoch_begin(self, epoch, logs=None):
            self.ds.epoch = self.ds.first_epoch + self.calls
            self.calls += 1

    class EpochBatches(keras.utils.PyDataset):
        """``steps`` batches per epoch, batch ``i`` of epoch ``e`` made by
        ``make_batch(e, i)`` (which must depend on (e, i) only, so that peeks and
        repeats are harmless). ``fit`` needs ``epoch_callbacks`` among its callbacks."""

        def __init__(self, make_batch, steps, *, first_epoch=0):
            super().__init__(workers=1, use_multiprocessing=False)
            self.make_batch, self.steps = make_batch, int(steps)
            self.first_epoch = self.epoch = int(first_epoch)
            self.epoch_callbacks = [_EpochCounter(self)]

        def __len__(self):
            return self.steps

        def __getitem__(self, i):
            if not 0 <= i < self.steps:
                raise IndexError(i)
            return self.make_batch(self.epoch, i)

    _CLASSES["EpochBatches"] = EpochBatches
    return EpochBatches


def _make_train_numpy(x, y, *, batch_size, augment, seed, shuffle, first_epoch):
    pixels, to_float = _pixels_numpy(x)
    labels = np.asarray(y)
    n = len(labels)
    steps = -(-n // batch_size)
    cache = {}

    def order(e):
        if e not in cache:
            cache.clear()
            cache[e] = _permutation_np(np.arange(n), seed, e, shuffle)
        return cache[e]

    def make_batch(e, i):
        idx = order(e)[i * batch_size:(i + 1) * batch_size]
        xb = to_float(pixels[idx])
        if augment != "none":
            xb = augment_batch(xb, augment, _stream(seed, "augment", e, i))
        return xb, labels[idx]

    return _epoch_batches_class()(make_batch, steps, first_epoch=first_epoch)


def _make_coteaching_numpy(x, y, clean, s_idx, c_idx, *, batch_size, c_batch_size, augment,
                           seed, first_epoch):
    pixels, to_float = _pixels_numpy(x)
    labels, clean_f = np.asarray(y), np.asarray(clean, np.float32)
    s, c = np.asarray(s_idx, np.int64), np.asarray(c_idx, np.int64)
    steps = -(-len(s) // batch_size)
    with_c = c_batch_size > 0 and len(c) > 0
    passes = -(-steps * c_batch_size // len(c)) if with_c else 0
    cache = {}

    def orders(e):
        if e not in cache:
            cache.clear()
            s_order = _permutation_np(s, seed, e)
            c_order = None
            if with_c:  # C read from fresh permutations, e * passes + p, as tf.data does
                c_order = np.concatenate([_permutation_np(c, seed + 1, e * passes + p)
                                          for p in range(passes)])[:steps * c_batch_size]
            cache[e] = s_order, c_order
        return cache[e]

    def make_batch(e, i):
        s_order, c_order = orders(e)
        si = s_order[i * batch_size:(i + 1) * batch_size]
        from_s = np.ones(len(si), np.float32)
        idx = si
        if with_c:
            ci = c_order[i * c_batch_size:(i + 1) * c_batch_size]
            idx = np.concatenate([si, ci])
            from_s = np.concatenate([from_s, np.zeros(len(ci), np.float32)])
        xb = to_float(pixels[idx])
        if augment != "none":
            xb = augment_batch(xb, augment, _stream(seed, "augment", e, i))
        return {"image": xb, "from_s": from_s, "clean": clean_f[idx]}, labels[idx]

    return _epoch_batches_class()(make_batch, steps, first_epoch=first_epoch)


def _make_paired_numpy(x1, y1, x2, y2, *, batch_size, augment, seed):
    sides = [_make_train_numpy(x, y, batch_size=batch_size, augment=augment, seed=seed,
                               shuffle=True, first_epoch=0) for x, y in ((x1, y1), (x2, y2))]
    steps = max(side.steps for side in sides)

    def side_batch(side, e, i):
        # As tf.data's repeat().take(steps): a side with fewer batches runs into its next
        # pass; each side's passes are counted on, epoch after epoch.
        per_epoch = -(-steps // side.steps)
        passes_before = e * per_epoch + i // side.steps
        return side.make_batch(passes_before, i % side.steps)

    def make_batch(e, i):
        (a, ya), (b, yb) = (side_batch(side, e, i) for side in sides)
        return (a, b), (ya, yb)

    return _epoch_batches_class()(make_batch, steps, first_epoch=0)
