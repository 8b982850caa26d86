"""Input pipelines: how the training images reach the networks (tf.data, with the authors'
augmentation as Keras preprocessing layers).

``make_train_dataset`` (one network), ``make_coteaching_dataset`` (S batches joined by C
batches, the modified Co-teaching's input) and ``make_paired_dataset`` (INCV's two runs side
by side). Every pipeline draws epoch e's order from (seed, e) alone, so a resumed run sees
the batches of the uninterrupted one.

TensorFlow and Keras are imported inside the functions, so that the scripts can parse their
flags (and print ``--help``) before TensorFlow loads.
"""

import numpy as np

AUGMENTATIONS = ("auto", "standard", "shift", "none")

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
                       first_epoch=0):
    """A tf.data pipeline: shuffle each epoch, batch, augment in the pipeline, prefetch.

    The images stay in memory once (as uint8 when they are exactly k/255, as CIFAR's are,
    converted back per batch bit for bit); the pipeline shuffles indices and gathers each
    batch, without a full-size shuffle buffer (a second copy of the data) or per-image work.
    Each epoch's order is drawn from (``seed``, epoch) alone, counting epochs from
    ``first_epoch`` (see :func:`_epoch_orders`): pass the number of epochs already done
    when resuming, and the resumed run sees the batches the uninterrupted one saw.
    """
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
                            augment="none", seed=0, first_epoch=0):
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


def make_paired_dataset(x1, y1, x2, y2, *, batch_size, augment="none", seed=0):
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
    import tensorflow as tf

    sides = [make_train_dataset(x, y, batch_size=batch_size, augment=augment, seed=seed)
             for x, y in ((x1, y1), (x2, y2))]
    steps = max(-(-len(y1) // batch_size), -(-len(y2) // batch_size))
    sides = [ds.repeat().take(steps) for ds in sides]
    return tf.data.Dataset.zip(tuple(sides)).map(
        lambda a, b: ((a[0], b[0]), (a[1], b[1]))).prefetch(tf.data.AUTOTUNE)
