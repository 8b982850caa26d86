"""Shared pieces: data, augmentation, the train-on-one-half routine, metrics, results, plots.

Everything here is a function or a class; nothing runs at import and nothing prints
(callers pass a ``printer`` where progress should be shown).

Data
    ``load_dataset("cifar10" | "cifar100" | "digits" | "path/to/file.npz")`` returns a
    :class:`Data` with float32 NHWC pixels in [0, 1] (the authors divided by 255) and int64
    labels. ``stratified_subset`` draws the seeded ``--n_train`` subset.
Training
    ``train_and_predict`` trains a compiled model on one part of the data from given initial
    weights and predicts the held-out part: the one routine that noisy_cv.py and INCV share.
Results
    ``prepare_run_dir`` (refuses to clobber an earlier run), atomic ``write_json`` /
    ``save_npz`` / ``save_figure``, ``JsonlLogger`` (one JSON line per epoch).
"""

import contextlib
import dataclasses
import json
import os
import pickle
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np

import keras

DATASETS = ("cifar10", "cifar100", "digits")
AUGMENTATIONS = ("auto", "standard", "shift", "none")


# --------------------------------------------------------------------------- randomness

def rng_for(seed, purpose):
    """A numpy Generator for one purpose ("noise", "split", ...) of one ``--seed``.

    Separate streams keep, e.g., the noisy labels unchanged when the subset size changes
    the number of draws made for the split. crc32 (not ``hash``) is stable across runs.
    """
    return np.random.default_rng([int(seed), zlib.crc32(purpose.encode())])


# --------------------------------------------------------------------------- data

@dataclasses.dataclass
class Data:
    """A labelled image dataset. x_*: float32 (n, h, w, ch) in [0, 1]; y_*: int64 (n,)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])


def dataset_name(spec):
    """The name used in result paths: the dataset name, or an .npz file's stem."""
    return os.path.splitext(os.path.basename(spec))[0] if spec.endswith(".npz") else spec


def _unpickle(path):
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def _cifar_pixels(flat):
    # Official layout: uint8 rows of 3072 = R, G, B planes of 32x32.
    return flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _missing(name, path, url):
    return FileNotFoundError(
        f"{name} not found: expected the official python-version files in '{path}'. "
        f"Download {url}, unpack it into the data directory (--data_dir), or run where "
        "Keras can download it.")


def _load_cifar(name, data_dir, download):
    if name == "cifar10":
        folder = os.path.join(data_dir, "cifar-10-batches-py")
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
        test_files, key = ["test_batch"], b"labels"
        url, keras_loader = ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                             keras.datasets.cifar10.load_data)
    else:
        folder = os.path.join(data_dir, "cifar-100-python")
        train_files, test_files, key = ["train"], ["test"], b"fine_labels"
        url, keras_loader = ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                             keras.datasets.cifar100.load_data)
    paths = [os.path.join(folder, f) for f in train_files + test_files]
    if all(os.path.isfile(p) for p in paths):
        parts = [_unpickle(p) for p in paths]
        xs = [_cifar_pixels(np.asarray(p[b"data"], np.uint8)) for p in parts]
        ys = [np.asarray(p[key], np.int64) for p in parts]
        n = len(train_files)
        return (np.concatenate(xs[:n]), np.concatenate(ys[:n]),
                np.concatenate(xs[n:]), np.concatenate(ys[n:]))
    if not download:
        raise _missing(name, folder, url)
    try:
        (xtr, ytr), (xte, yte) = keras_loader()
    except Exception as err:  # offline: say where the files go instead of a URL error
        raise _missing(name, folder, url) from err
    return xtr, ytr.reshape(-1), xte, yte.reshape(-1)


def _load_digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]  # pixel values are 0..16
    y = digits.target.astype(np.int64)
    # A fixed stratified split (random_state=0): identical on every machine.
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, stratify=y,
                                              random_state=0)
    return x_tr, y_tr, x_te, y_te


def _load_npz(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--dataset file '{path}' does not exist")
    with np.load(path) as f:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
        if missing:
            raise ValueError(f"{path}: missing arrays {sorted(missing)}; an .npz dataset needs "
                             "x_train, y_train, x_test, y_test")
        arrays = [f[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    for k, x in (("x_train", arrays[0]), ("x_test", arrays[2])):
        if x.ndim not in (3, 4):
            raise ValueError(f"{path}: {k} must be (n, h, w) or (n, h, w, channels), "
                             f"got shape {x.shape}")
        if x.dtype != np.uint8 and (x.min() < 0 or x.max() > 1):
            raise ValueError(f"{path}: {k} must be uint8 (0..255) or floats in [0, 1], got "
                             f"{x.dtype} in [{x.min()}, {x.max()}]")
    return arrays


def _to_unit_float(x):
    x = x[..., None] if x.ndim == 3 else x
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    return x.astype(np.float32)


def load_dataset(spec, *, data_dir="data", download=True):
    """Load a dataset by name or ``.npz`` path.

    Parameters
    ----------
    spec : str
        "cifar10", "cifar100" (official python pickles under ``data_dir``), "digits"
        (scikit-learn's bundled 8x8 digits, fixed stratified 75/25 split) or a path to an
        ``.npz`` holding x_train, y_train, x_test, y_test.
    data_dir : str
        Folder holding ``cifar-10-batches-py`` / ``cifar-100-python``.
    download : bool
        When the CIFAR files are absent, try Keras' own download before failing.

    Returns
    -------
    Data
        Pixels float32 in [0, 1], shape (n, h, w, ch); labels int64 (n,).
    """
    if spec in ("cifar10", "cifar100"):
        xtr, ytr, xte, yte = _load_cifar(spec, data_dir, download)
    elif spec == "digits":
        xtr, ytr, xte, yte = _load_digits()
    elif spec.endswith(".npz"):
        xtr, ytr, xte, yte = _load_npz(spec)
    else:
        raise ValueError(f"unknown --dataset '{spec}'; choose one of {', '.join(DATASETS)} "
                         "or give a path ending in .npz")
    ytr, yte = np.asarray(ytr).reshape(-1), np.asarray(yte).reshape(-1)
    for k, y in (("y_train", ytr), ("y_test", yte)):
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
            raise ValueError(f"{spec}: {k} must hold non-negative integer class labels")
    xtr, xte = _to_unit_float(xtr), _to_unit_float(xte)
    if xtr.shape[1:] != xte.shape[1:]:
        raise ValueError(f"{spec}: x_train and x_test images differ in shape: "
                         f"{xtr.shape[1:]} vs {xte.shape[1:]}")
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise ValueError(f"{spec}: images and labels differ in number: {len(xtr)} vs "
                         f"{len(ytr)} (train), {len(xte)} vs {len(yte)} (test)")
    num_classes = int(max(ytr.max(), yte.max())) + 1
    return Data(dataset_name(spec), xtr, ytr.astype(np.int64), xte, yte.astype(np.int64),
                num_classes)


def stratified_subset(y, n, *, seed):
    """Indices of a seeded, class-stratified subset of size ``n`` (sorted), or all if None."""
    if n is None or n >= len(y):
        return np.arange(len(y))
    if n < 2 * len(np.unique(y)):
        raise ValueError(f"--n_train must be at least twice the number of classes, got {n}")
    from sklearn.model_selection import train_test_split

    idx, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y,
                              random_state=int(rng_for(seed, "subset").integers(2**31)))
    return np.sort(idx)


def split_halves(n, *, rng):
    """A random partition of ``range(n)`` into two halves (first gets the extra one)."""
    perm = rng.permutation(n)
    return np.sort(perm[: (n + 1) // 2]), np.sort(perm[(n + 1) // 2:])


# --------------------------------------------------------------------------- augmentation

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
    layers = [keras.layers.RandomTranslation(0.125, 0.125, fill_mode="nearest", seed=seed)]
    if kind == "standard":
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed + 1))
    elif kind != "shift":
        raise ValueError(f"unknown augmentation '{kind}'")
    return keras.Sequential(layers, name=f"augment_{kind}")


def make_train_dataset(x, y, *, batch_size, augment="none", seed=0, shuffle=True):
    """A tf.data pipeline: shuffle each epoch, batch, augment in the pipeline, prefetch.

    The images stay in memory once (as uint8 when they are exactly k/255, as CIFAR's are,
    converted back per batch bit for bit); the pipeline shuffles indices and gathers each
    batch. Same order as shuffling the (image, label) pairs with the same seed, but without
    a full-size shuffle buffer (a second copy of the data) or per-image work.
    """
    import tensorflow as tf

    pixels, to_float = _pixels_in_memory(x)
    labels = tf.constant(y)
    ds = tf.data.Dataset.range(len(x))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    augmenter = make_augmenter(augment, seed=seed)

    def gather(idx):
        xb = to_float(tf.gather(pixels, idx))
        if augmenter is not None:
            xb = augmenter(xb, training=True)
        return xb, tf.gather(labels, idx)

    ds = ds.batch(batch_size).map(gather, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def make_coteaching_dataset(x, y, clean, s_idx, c_idx, *, batch_size, c_batch_size,
                            augment="none", seed=0):
    """Batches for (modified) Co-teaching: each epoch is one pass over S in batches of
    ``batch_size``; when ``c_batch_size`` > 0 each S batch is joined by ``c_batch_size``
    samples drawn from C (reshuffled, cycling; PAPER.md sec. 4).

    Yields ``({"image": (b, h, w, ch), "from_s": (b,) float32, "clean": (b,) float32}, y)``
    with the S part first. ``clean`` (true label == noisy label) is for tracking only.
    Like :func:`make_train_dataset` it shuffles indices into one in-memory copy of ``x``.
    """
    import tensorflow as tf

    pixels, to_float = _pixels_in_memory(x)
    labels, clean_f = tf.constant(y), tf.constant(np.asarray(clean, np.float32))

    def part(idx, size, seed_, repeat):
        ds = tf.data.Dataset.from_tensor_slices(np.asarray(idx, np.int64))
        ds = ds.shuffle(len(idx), seed=seed_, reshuffle_each_iteration=True)
        return ds.repeat().batch(size, drop_remainder=True) if repeat else ds.batch(size)

    ds = part(s_idx, batch_size, seed, False).map(lambda i: (i, tf.ones_like(i, tf.float32)))
    if c_batch_size > 0 and len(c_idx):
        ds = tf.data.Dataset.zip(ds, part(c_idx, c_batch_size, seed + 1, True)).map(
            lambda s, c: (tf.concat([s[0], c], 0),
                          tf.concat([s[1], tf.zeros_like(c, tf.float32)], 0)))
    augmenter = make_augmenter(augment, seed=seed)

    def to_inputs(idx, from_s):
        xb = to_float(tf.gather(pixels, idx))
        if augmenter is not None:
            xb = augmenter(xb, training=True)
        return ({"image": xb, "from_s": from_s, "clean": tf.gather(clean_f, idx)},
                tf.gather(labels, idx))

    return ds.map(to_inputs, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


# --------------------------------------------------------------------------- schedules

class PiecewiseLR:
    """lr(epoch) = base * factor_k for the last boundary_k with epoch > boundary_k.

    Boundaries are given for ``paper_epochs`` and scale with the run's ``epochs`` so that a
    short CPU run keeps the schedule's shape; at the paper's epochs they are exact.
    ``epoch`` is 0-based, as in the authors' Keras ``lr_schedule(epoch)``.
    """

    def __init__(self, base, boundaries, factors, *, paper_epochs, epochs):
        if len(boundaries) != len(factors):
            raise ValueError("boundaries and factors must have the same length")
        self.base = float(base)
        self.boundaries = [b * epochs / paper_epochs for b in boundaries]
        self.factors = list(factors)

    def __call__(self, epoch, lr=None):
        factor = 1.0
        for boundary, f in zip(self.boundaries, self.factors):
            if epoch > boundary:
                factor = f
        return self.base * factor


def reset_optimizer(optimizer):
    """Zero an optimizer's slots and step count, as a fresh one would start (keeps lr)."""
    for v in optimizer.variables:
        if "learning_rate" not in v.path:
            v.assign(keras.ops.zeros(v.shape, v.dtype))


class EpochSchedule(keras.callbacks.Callback):
    """Set each optimizer's learning rate from ``schedule(epoch)`` at every epoch start and,
    with ``reset_on_drop``, zero the optimizers' state whenever the rate changes: the
    authors re-compiled at each drop, which gave a fresh Adam. ``on_epoch`` (optional)
    is called with the epoch too (e.g. to update Co-teaching's forget rate)."""

    def __init__(self, schedule, optimizers, *, reset_on_drop=True, on_epoch=None):
        super().__init__()
        self.schedule, self.optimizers = schedule, list(optimizers)
        self.reset_on_drop, self.on_epoch = reset_on_drop, on_epoch

    def on_epoch_begin(self, epoch, logs=None):
        lr = self.schedule(epoch)
        changed = epoch > 0 and lr != self.schedule(epoch - 1)
        for opt in self.optimizers:
            opt.learning_rate.assign(lr)
            if changed and self.reset_on_drop:
                reset_optimizer(opt)
        if self.on_epoch is not None:
            self.on_epoch(epoch)


class EpochCheckpoint(keras.callbacks.Callback):
    """After each epoch atomically save the model's weights, its optimizers' state and the
    number of finished epochs to ``path`` (an .npz), so a killed run can ``--resume``."""

    def __init__(self, path, optimizers):
        super().__init__()
        self.path, self.optimizers = path, list(optimizers)

    def on_epoch_end(self, epoch, logs=None):
        arrays = {f"w{i}": w for i, w in enumerate(self.model.get_weights())}
        for k, opt in enumerate(self.optimizers):
            arrays.update({f"o{k}_{i}": keras.ops.convert_to_numpy(v)
                           for i, v in enumerate(opt.variables)})
        save_npz(self.path, epochs_done=np.int64(epoch + 1), **arrays)


def restore_checkpoint(path, model, optimizers):
    """Load an :class:`EpochCheckpoint` file into ``model`` and its (built) optimizers;
    returns the number of finished epochs."""
    with np.load(path) as f:
        model.set_weights([f[f"w{i}"] for i in range(len(model.get_weights()))])
        for k, opt in enumerate(optimizers):
            for i, v in enumerate(opt.variables):
                v.assign(f[f"o{k}_{i}"])
        return int(f["epochs_done"])


class TrainDiagnostics(keras.callbacks.Callback):
    """The authors' end-of-epoch tracking: loss and accuracy w.r.t. noisy labels of each
    network on a fixed random subset (<= 1000) of its training samples, split into
    samples whose label is clean / noisy. Tracking only, never used for training."""

    def __init__(self, nets, x, y_noisy, clean, *, names=("model1", "model2")):
        super().__init__()
        self.nets, self.x, self.y, self.clean, self.names = nets, x, y_noisy, clean, names

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        for net, name in zip(self.nets, self.names):
            probs = net.predict(self.x, batch_size=1024, verbose=0)
            ce, hit = cross_entropy(probs, self.y), probs.argmax(1) == self.y
            for part, mask in (("mix", slice(None)), ("clean", self.clean),
                               ("noisy", ~self.clean)):
                n = len(ce[mask])
                logs[f"train_loss_{part}_{name}"] = float(ce[mask].mean()) if n else float("nan")
                logs[f"train_acc_{part}_{name}"] = float(hit[mask].mean()) if n else float("nan")


# --------------------------------------------------------------------------- metrics

def cross_entropy(probs, labels, eps=1e-12):
    """Per-sample cross-entropy -log p[label]; probs (n, c), labels (n,) -> (n,)."""
    return -np.log(np.clip(probs[np.arange(len(labels)), labels], eps, None))


def selection_metrics(y_true, y_noisy, selected):
    """Label precision / recall of a selection (PAPER.md sec. 2).

    LP = fraction of selected samples whose noisy label is correct; LR = fraction of the
    correctly-labelled samples that were selected. NaN where undefined (empty sets).
    """
    clean = np.asarray(y_true) == np.asarray(y_noisy)
    selected = np.asarray(selected, bool)
    n_sel, n_clean = selected.sum(), clean.sum()
    tp = (selected & clean).sum()
    return {"label_precision": float(tp / n_sel) if n_sel else float("nan"),
            "label_recall": float(tp / n_clean) if n_clean else float("nan"),
            "selected": int(n_sel)}


def normalized_confusion(y_true, y_pred, num_classes):
    """Row-normalised confusion matrix (rows: true label, columns: prediction), (c, c)."""
    from sklearn.metrics import confusion_matrix

    m = confusion_matrix(y_true, y_pred, labels=np.arange(num_classes)).astype(np.float64)
    rows = m.sum(axis=1, keepdims=True)
    return np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)


# --------------------------------------------------------------------------- training

class HeldOutMonitor(keras.callbacks.Callback):
    """The authors' held-out callback: after each epoch predict the held-out part and log
    accuracy w.r.t. its noisy labels, split into samples whose label is clean / noisy.

    With ``keep_best`` it also keeps (in memory) the weights of the epoch with the best
    held-out noisy accuracy and restores them when training ends (the authors'
    ModelCheckpoint on val accuracy, which on Keras >= 2.3 silently never fired).
    """

    def __init__(self, x, y_noisy, y_true=None, *, batch_size=1024, keep_best=False):
        super().__init__()
        self.x, self.y_noisy, self.batch_size = x, y_noisy, batch_size
        self.clean = None if y_true is None else (y_true == y_noisy)
        self.keep_best = keep_best
        self.best, self.best_epoch, self.best_weights = -1.0, None, None

    def on_epoch_end(self, epoch, logs=None):
        probs = self.model.predict(self.x, batch_size=self.batch_size, verbose=0)
        hit = probs.argmax(1) == self.y_noisy
        acc = float(hit.mean())
        if logs is not None:
            logs["val_noisy_accuracy"] = acc
            if self.clean is not None:
                logs["val_acc_clean_labels"] = float(hit[self.clean].mean()) \
                    if self.clean.any() else float("nan")
                logs["val_acc_noisy_labels"] = float(hit[~self.clean].mean()) \
                    if (~self.clean).any() else float("nan")
        if self.keep_best and acc > self.best:
            self.best, self.best_epoch = acc, epoch
            self.best_weights = self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.keep_best and self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class JsonlLogger(keras.callbacks.Callback):
    """Append one JSON line per epoch (epoch, lr, seconds, every logged metric) to ``path``;
    optionally echo a one-line summary through ``printer``."""

    def __init__(self, path, *, extra=None, printer=None, optimizer=None):
        super().__init__()
        self.path, self.extra, self.printer = path, dict(extra or {}), printer
        self.optimizer = optimizer  # whose lr is logged; default: the model's

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.time()

    def on_epoch_end(self, epoch, logs=None):
        row = {**self.extra, "epoch": epoch + 1,
               "lr": float(keras.ops.convert_to_numpy(
                   (self.optimizer or self.model.optimizer).learning_rate)),
               "seconds": round(time.time() - self._t0, 3)}
        # Keras' LearningRateScheduler also logs "learning_rate": already in "lr".
        row.update({k: float(v) for k, v in (logs or {}).items() if k != "learning_rate"})
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
        if self.printer:
            self.printer("  " + " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


def compile_classifier(model, *, lr=1e-3, steps_per_execution=1, jit_compile="auto"):
    """Adam + sparse cross-entropy on softmax outputs + accuracy, as the authors compiled.

    ``steps_per_execution`` > 1 runs that many steps per call of the compiled function
    (less Python per step; callbacks then see logs every that many batches).
    ``jit_compile``: Keras' "auto" leaves XLA off on a CPU (it is ~2x slower there).
    """
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=steps_per_execution, jit_compile=jit_compile)
    return model


def train_and_predict(model, initial_weights, x_fit, y_fit, x_held, y_held, *,
                      epochs, batch_size, schedule, augment="none", seed=0, keep_best=False,
                      y_held_true=None, log_path=None, log_extra=None, verbose=1,
                      printer=None, callbacks=()):
    """Train on one part from ``initial_weights``, then predict the held-out part.

    The routine behind noisy cross-validation (noisy_cv.py) and every INCV training run.

    Parameters
    ----------
    model : keras.Model
        Compiled classifier (softmax output). Its weights are overwritten with
        ``initial_weights`` and its optimizer state is reset, so one compiled model serves
        many runs without re-tracing.
    x_fit, y_fit : (n, h, w, ch) float32, (n,) int
        Training part (noisy labels).
    x_held, y_held : (m, h, w, ch) float32, (m,) int
        Held-out part and its noisy labels (monitored each epoch).
    schedule : callable epoch -> lr
        E.g. a :class:`PiecewiseLR`.
    keep_best : bool
        Restore the epoch with the best held-out noisy accuracy (INCV's checkpoint rule).
    y_held_true : (m,) int, optional
        True labels, for tracking accuracy on clean / noisy held-out samples only.

    Returns
    -------
    probs : (m, c) float32
        Held-out softmax outputs of the final (or best) weights.
    info : dict
        ``history`` (per-epoch logs), ``best_epoch`` (1-based, or None).
    """
    model.set_weights(initial_weights)
    reset_optimizer(model.optimizer)
    monitor = HeldOutMonitor(x_held, y_held, y_held_true, keep_best=keep_best)
    cbs = [keras.callbacks.LearningRateScheduler(schedule), monitor,
           JsonlLogger(log_path, extra=log_extra, printer=printer), *callbacks]
    ds = make_train_dataset(x_fit, y_fit, batch_size=batch_size, augment=augment, seed=seed)
    history = model.fit(ds, epochs=epochs, callbacks=cbs, verbose=verbose, shuffle=False)
    probs = model.predict(x_held, batch_size=1024, verbose=0)
    best = monitor.best_epoch + 1 if keep_best and monitor.best_epoch is not None else None
    return probs, {"history": history.history, "best_epoch": best}


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



# --------------------------------------------------------------------------- devices
# ``--devices {default,all}``: data-parallel training with TensorFlow's own engine,
# tf.distribute.MirroredStrategy. Build and compile the model under ``strategy.scope()``;
# ``fit`` then splits each global batch of --batch_size across the replicas, each replica runs
# the training step on its share, Keras scales each replica's loss by 1/replicas and the
# optimizer sums the gradients across replicas (an all-reduce) before one identical update of
# every copy of the weights.

DEVICES = ("default", "all")
DEVICES_HELP = (
    "default: TensorFlow's default placement on one device (the first GPU if any, else the "
    "CPU); all: data-parallel training with tf.distribute.MirroredStrategy over all visible "
    "GPUs (or over the logical CPU devices when there is no GPU but several are configured): "
    "each batch of --batch_size (a multiple of the number of replicas) is split across the "
    "replicas and their gradients are summed, BatchNorm uses the statistics of the whole "
    "batch, and Co-teaching's keep count and small-loss picks are made per replica on its "
    "share (see README). With one visible device, 'all' falls back to 'default'. Choose the "
    "GPUs with CUDA_VISIBLE_DEVICES.")

_STRATEGIES = {}


def device_strategy(devices="default"):
    """The tf.distribute strategy for ``--devices``.

    Parameters
    ----------
    devices : {"default", "all"}
        "default": TensorFlow's default strategy (its ``scope()`` changes nothing: one device,
        TF's default placement). "all": a ``tf.distribute.MirroredStrategy`` over every visible
        logical GPU or, when there is none, over every logical CPU device (several exist only
        if configured with ``tf.config.set_logical_device_configuration``; useful for tests).
        When that leaves a single device, the default strategy is returned instead (one
        replica, identical to "default"); :func:`describe_strategy` says so.

    Returns
    -------
    tf.distribute.Strategy
        The same object for repeated calls with "all" (one strategy per process). Use
        ``with strategy.scope():`` around building *and* compiling a model (and creating its
        optimizers); ``fit``/``predict`` need no scope. ``strategy.num_replicas_in_sync`` is
        the number of replicas.

    Notes
    -----
    Listing the devices initialises TensorFlow's runtime, after which the logical device
    configuration can no longer change.
    """
    import tensorflow as tf

    if devices not in DEVICES:
        raise ValueError(f"--devices must be one of {DEVICES}, got {devices!r}")
    if devices == "default":
        return tf.distribute.get_strategy()
    if devices not in _STRATEGIES:
        names = [d.name for d in tf.config.list_logical_devices("GPU")] or [
            d.name for d in tf.config.list_logical_devices("CPU")]
        _STRATEGIES[devices] = (tf.distribute.MirroredStrategy(names) if len(names) > 1
                                else tf.distribute.get_strategy())
    return _STRATEGIES[devices]


def strategy_devices(strategy):
    """The devices a strategy's replicas run on (one name per replica); for the default
    strategy, the one device TensorFlow places work on by default."""
    import tensorflow as tf

    if strategy.num_replicas_in_sync > 1:
        return list(strategy.extended.worker_devices)
    gpus = tf.config.list_logical_devices("GPU")
    return [(gpus or tf.config.list_logical_devices("CPU"))[0].name]


def describe_strategy(strategy):
    """One line saying which devices train, e.g. for the scripts to print with --devices all."""
    names = strategy_devices(strategy)
    if len(names) > 1:
        return (f"--devices all: tf.distribute.MirroredStrategy over {len(names)} replicas "
                f"({', '.join(names)}); each batch is split across them")
    return (f"--devices all: only one device is visible ({names[0]}), so no MirroredStrategy: "
            "training on it with TensorFlow's default placement, as --devices default")


def check_batch_size(batch_size, strategy):
    """Raise ValueError unless ``batch_size`` splits evenly across the strategy's replicas.

    Keras 3's TensorFlow trainer, under tf.distribute, averages the first batch of every
    ``fit``/``evaluate`` call across the replicas to learn the input shapes
    (``_maybe_symbolic_build``), which fails with an obscure "AddN ... must have the same size
    and shape" error when that batch does not split evenly. Later (e.g. last, smaller) batches
    may split unevenly. :class:`models.CoTeaching` skips that step, so its S + C batches may
    have any size.
    """
    replicas = strategy.num_replicas_in_sync
    if replicas > 1 and batch_size % replicas:
        raise ValueError(
            f"--batch_size {batch_size} does not split evenly across the {replicas} replicas "
            f"of --devices all; use a multiple of {replicas} (or CUDA_VISIBLE_DEVICES to "
            "choose the GPUs)")


def sync_batchnorm(model, strategy):
    """Under a multi-replica ``strategy``, make every BatchNormalization layer of ``model``
    (nested models included) normalise with the statistics of the *global* batch (Keras'
    ``BatchNormalization(synchronized=True)``, an all-reduce per layer and step).

    Why: with per-replica statistics (Keras' default) Keras 3 also keeps the moving
    mean/variance per replica (their variables have aggregation "none"), so the copies drift
    apart, ``get_weights`` returns replica 0's while ``predict`` uses each replica's own, and a
    replica that receives an empty share (a last batch smaller than the number of replicas)
    turns its moving statistics into NaN. With global statistics every replica computes the
    same moments, hence the same moving averages, an empty share is harmless, and a training
    step is the single-device step on the whole batch (up to float rounding).

    Must be called before the first ``fit`` traces the training step. With one replica it
    changes nothing. Returns the number of BatchNormalization layers switched.
    """
    if strategy.num_replicas_in_sync <= 1:
        return 0
    count, stack, seen = 0, [model], set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
            count += 1
        stack.extend(getattr(layer, "layers", None) or [])
    return count


# --------------------------------------------------------------------------- results

def prepare_run_dir(path, *, overwrite=False, resume=False):
    """Create a run directory; refuse to touch an earlier run's unless told.

    overwrite: delete what is there first. resume: keep it (the caller continues it).
    Otherwise an existing non-empty directory raises FileExistsError naming the flags.
    """
    if os.path.isdir(path) and os.listdir(path):
        if overwrite:
            shutil.rmtree(path)
        elif not resume:
            raise FileExistsError(
                f"results directory '{path}' already holds an earlier run; pass --overwrite "
                "to replace it, --skip_existing to keep finished runs, or choose another "
                "--results_dir")
    os.makedirs(path, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_write(path, mode="w"):
    """Write to a temporary file beside ``path`` and rename it into place on success."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None  # strict JSON has no NaN
    return obj


def write_json(path, obj):
    """Atomically write ``obj`` (numpy values allowed; NaN -> null) as indented JSON."""
    with atomic_write(path) as f:
        json.dump(_jsonable(obj), f, indent=2)
        f.write("\n")


def read_json(path):
    with open(path) as f:
        return json.load(f)


def save_npz(path, **arrays):
    """Atomically write arrays to a compressed .npz."""
    with atomic_write(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def save_figure(fig, path):
    """Atomically save a matplotlib figure (format from the extension) and close it."""
    import matplotlib.pyplot as plt

    with atomic_write(path, "wb") as f:
        fig.savefig(f, format=os.path.splitext(path)[1][1:], dpi=120, bbox_inches="tight")
    plt.close(fig)


def run_config(args, **extra):
    """The resolved configuration of a run: every flag, plus versions and provenance."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.abspath(__file__)),
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"args": dict(vars(args)), **extra,
            "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
            "versions": {"python": platform.python_version(), "keras": keras.__version__,
                         "backend": keras.backend.backend(), "numpy": np.__version__},
            "git_commit": commit, "host": platform.node(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def cli(main, args):
    """Run a script's ``main(args)``; a bad input (ValueError, missing or existing files)
    ends with its one-line message on stderr and exit status 2 instead of a traceback.
    Set NOISY_LABELS_DEBUG=1 to see the traceback."""
    try:
        main(args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        if os.environ.get("NOISY_LABELS_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def add_run_arguments(parser, *, arch, arch_help, batch_help="training batch size"):
    """The flags both scripts share (data, noise, network, seeds, results, devices)."""
    import noise  # here, not at the top: utils must import without the scripts' modules
    import models

    p = parser
    p.add_argument("--dataset", type=str, default="cifar10",
                   help="cifar10, cifar100, digits (bundled with scikit-learn) or a path to "
                        "an .npz with x_train, y_train, x_test, y_test")
    p.add_argument("--data_dir", type=str, default="data",
                   help="folder holding cifar-10-batches-py / cifar-100-python")
    p.add_argument("--no_download", action="store_true",
                   help="never try Keras' CIFAR download when the files are not in --data_dir")
    p.add_argument("--noise_pattern", type=str, nargs="+", default=["sym"],
                   choices=noise.PATTERNS, help="noise pattern(s); each is run")
    p.add_argument("--noisy_ratio", "--noise_ratio", dest="noisy_ratio", type=float,
                   nargs="+", default=[0.5], help="noise ratio(s) e in [0, 1]; each is run")
    p.add_argument("--arch", type=str, default=arch, choices=models.MODEL_NAMES, help=arch_help)
    p.add_argument("--batch_size", type=int, default=128, help=batch_help)
    p.add_argument("--lr", type=float, default=1e-3, help="initial Adam learning rate")
    p.add_argument("--augment", type=str, default="auto", choices=AUGMENTATIONS,
                   help="standard = shift 4/32 + horizontal flip (authors'); auto = standard, "
                        "none for digits")
    p.add_argument("--n_train", type=int, default=None,
                   help="use a seeded stratified subset of this many training images")
    p.add_argument("--seed", type=int, nargs="+", default=[0],
                   help="seed(s) for noise, splits, init and augmentation; each is run")
    p.add_argument("--results_dir", type=str, default="results", help="where runs are written")
    p.add_argument("--overwrite", action="store_true", help="replace existing run directories")
    p.add_argument("--skip_existing", action="store_true",
                   help="skip runs whose summary.json exists (continue a grid)")
    p.add_argument("--devices", type=str, default="default", choices=DEVICES, help=DEVICES_HELP)
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                   help="Keras progress: 0 silent, 1 progress bar, 2 one line per epoch")


def check_run_arguments(parser, args, *, positive=("epochs", "batch_size")):
    """Reject flag values no run could use, through ``parser.error`` (exit status 2)."""
    for e in args.noisy_ratio:
        if not 0.0 <= e <= 1.0:
            parser.error(f"--noisy_ratio must be in [0, 1], got {e}")
    for flag in positive:
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be a positive integer, got {getattr(args, flag)}")
    if args.n_train is not None and args.n_train < 4:
        parser.error(f"--n_train must be at least 4, got {args.n_train}")


def load_training_data(args, printer):
    """The dataset of ``--dataset``, its training part cut to the ``--n_train`` subset."""
    data = load_dataset(args.dataset, data_dir=args.data_dir, download=not args.no_download)
    subset = stratified_subset(data.y_train, args.n_train, seed=args.seed[0])
    data.x_train, data.y_train = data.x_train[subset], data.y_train[subset]
    if args.n_train is not None and len(args.seed) > 1:
        printer("note: the --n_train subset is drawn with the first seed for every seed")
    return data


def plan_runs(run_dirs, *, skip_existing=False, overwrite=False, resume=False, printer=None):
    """Check every run directory before any training starts.

    Returns the indices of the runs to do and the summaries of finished runs skipped with
    ``skip_existing``; raises FileExistsError for an earlier run that would be overwritten
    without ``overwrite`` (or continued without ``resume``).
    """
    todo, done = [], []
    for k, out in enumerate(run_dirs):
        summary = os.path.join(out, "summary.json")
        if skip_existing and os.path.isfile(summary):
            if printer:
                printer(f"skip (finished earlier): {out}")
            done.append(read_json(summary))
            continue
        if os.path.isdir(out) and os.listdir(out) and not (overwrite or resume):
            prepare_run_dir(out)  # raises the explanatory FileExistsError
        todo.append(k)
    return todo, done


def run_strategy(args, printer):
    """``--devices``' strategy, checked against ``--batch_size``; says which devices train."""
    strategy = device_strategy(args.devices)
    if args.devices == "all":
        printer(describe_strategy(strategy))
    check_batch_size(args.batch_size, strategy)
    return strategy


def build_classifier(args, data, strategy):
    """``--arch`` for ``data``, compiled as the authors did, on ``--devices``' strategy."""
    import models

    with strategy.scope():
        net = models.build_model(args.arch, data.input_shape, data.num_classes)
        sync_batchnorm(net, strategy)
        return compile_classifier(net, lr=args.lr)


# --------------------------------------------------------------------------- plots

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: figures are files
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_vs_transition(confusion, transition, path, *, title=""):
    """Side-by-side heat maps: measured held-out confusion M (true x pred) and noise T."""
    plt = _pyplot()
    c = len(transition)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), constrained_layout=True)
    for ax, m, name in ((axes[0], confusion, "measured confusion M (held-out)"),
                        (axes[1], transition, "noise transition T")):
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        ax.set(title=name, xlabel="predicted / noisy label", ylabel="true label",
               xticks=range(c), yticks=range(c))
        if c <= 10:
            for i in range(c):
                for j in range(c):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if m[i, j] < 0.5 else "black")
    fig.colorbar(im, ax=axes, shrink=0.8)
    fig.suptitle(title)
    save_figure(fig, path)


def plot_theory_sweep(points, path, *, num_classes, title=""):
    """The paper's theory figure: measured held-out accuracy, LP and LR (points) over the
    closed-form curves (lines), one panel per noise pattern.

    points: list of dicts with pattern, ratio, noisy_accuracy, label_precision, label_recall.
    """
    import noise

    plt = _pyplot()
    patterns = sorted({p["pattern"] for p in points})
    fig, axes = plt.subplots(1, len(patterns), figsize=(5.2 * len(patterns), 4),
                             squeeze=False, constrained_layout=True)
    grid = np.linspace(0, 1, 201)
    curves = (("noisy_accuracy", "test accuracy (noisy labels)", noise.expected_accuracy),
              ("label_precision", "label precision", noise.expected_label_precision),
              ("label_recall", "label recall", noise.expected_label_recall))
    for ax, pattern in zip(axes[0], patterns):
        ts = [noise.transition_matrix(pattern, e, num_classes) for e in grid]
        pts = [p for p in points if p["pattern"] == pattern]
        for (key, label, formula), color in zip(curves, ("C0", "C1", "C2")):
            ax.plot(grid, [formula(t) for t in ts], color=color, label=f"{label} (theory)")
            ax.plot([p["ratio"] for p in pts],
                    [np.nan if p[key] is None else p[key] for p in pts],
                    "o", color=color, label=f"{label} (measured)")
        ax.set(title=f"{pattern} noise", xlabel="noise ratio e", ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    save_figure(fig, path)


# --------------------------------------------------------------------------- tables
# ``python utils.py table PATH ...``: the paper's table (and the selection / theory tables)
# from finished run directories. collect_runs -> table_* (rows: flat dicts) -> format_*.

METHOD_LABELS = {"standard": "Standard", "coteaching": "Co-teaching",
                 "incv": "INCV + Co-teaching"}
# PAPER.md sec. 4: the paper's CIFAR-10 clean test accuracy (%), mean and ± of 5 runs.
PAPER_RUNS, PAPER_SETTINGS = 5, ("sym 0.2", "sym 0.5", "sym 0.8", "asym 0.4")
PAPER_CIFAR10 = {
    "F-correction": ((85.08, 0.43), (76.02, 0.19), (34.76, 4.53), (83.55, 2.15)),
    "Decoupling": ((86.72, 0.32), (79.31, 0.62), (36.90, 4.61), (75.27, 0.83)),
    "Co-teaching": ((89.05, 0.32), (82.12, 0.59), (16.21, 3.02), (84.55, 2.81)),
    "MentorNet": ((88.36, 0.46), (77.10, 0.44), (28.89, 2.29), (77.33, 0.79)),
    "D2L": ((86.12, 0.43), (67.39, 13.62), (10.02, 0.04), (85.57, 1.21)),
    "INCV + Co-teaching": ((89.71, 0.18), (84.78, 0.33), (52.27, 3.50), (86.04, 0.54)),
}
# Flags that pick which runs a call makes or how it bookkeeps: not what a run *is*.
_GRID_FLAGS = {"dataset", "data_dir", "no_download", "noise_pattern", "noisy_ratio", "method",
               "seed", "results_dir", "overwrite", "skip_existing", "resume", "verbose",
               "incv_only"}


def _read_run(path):
    """One run directory -> its record (see :func:`collect_runs`)."""
    files, status, reason = {}, "done", None
    for name in ("config", "summary"):
        f = os.path.join(path, name + ".json")
        try:
            files[name] = read_json(f) if os.path.isfile(f) else None
        except (OSError, ValueError) as err:
            files[name], status, reason = None, "unreadable", f"unreadable {name}.json: {err}"
    summary, config = files["summary"], files["config"] or {}
    if summary is None and status == "done":
        status, reason = "partial", "unfinished: config.json but no summary.json"
    src, run, args = summary or {}, config.get("run") or {}, config.get("args") or {}

    def get(key, fallback=None):
        return src.get(key, run.get(key, fallback))

    dataset = src.get("dataset") or (dataset_name(args["dataset"]) if "dataset" in args else None)
    method = get("method")
    return {"path": path, "status": status, "reason": reason, "summary": summary,
            "kind": "train" if method is not None else "cv", "method": method,
            "dataset": dataset, "arch": get("arch", args.get("arch")),
            "epochs": get("epochs", args.get("epochs")),
            "n_train": src.get("n_train", config.get("n_train")), "pattern": get("pattern"),
            "ratio": get("ratio"), "seed": get("seed"),
            "flags": {k: v for k, v in args.items() if k not in _GRID_FLAGS}}


def _group(r):
    return r["kind"], r["dataset"], r["arch"], r["epochs"], r["n_train"]


def _cell(r):
    return _group(r) + (r["pattern"], r["ratio"], r["method"])


def collect_runs(paths):
    """Every run directory (holding summary.json or config.json) under ``paths``.

    Parameters
    ----------
    paths : list of str
        Result folders, searched recursively; a run reached twice is read once.

    Returns
    -------
    list of dict
        One per run directory, sorted by path: ``path``, ``status`` ("done", "partial":
        no summary.json, "unreadable", "duplicate": same setting and seed as an earlier
        finished run), ``reason`` (None when done), ``summary``, ``kind`` ("train":
        incv_train.py, "cv": noisy_cv.py) and the run's identity: dataset, arch, epochs,
        n_train, pattern, ratio, method (None for cv), seed, flags (config.json's other
        flags). Runs are averaged only within one (kind, dataset, arch, epochs, n_train).

    Raises
    ------
    FileNotFoundError
        A path does not exist or is not a directory.
    ValueError
        A path holds no run directory.
    """
    import glob

    dirs = {}
    for p in paths:
        if not os.path.isdir(p):
            raise FileNotFoundError(f"table: '{p}' " + (
                "is not a directory" if os.path.exists(p) else "does not exist"))
        found = {os.path.dirname(f) for name in ("summary.json", "config.json") for f in
                 glob.glob(os.path.join(glob.escape(p), "**", name), recursive=True)}
        if not found:
            raise ValueError(f"table: no runs under '{p}' (no summary.json or config.json)")
        for d in found:
            dirs.setdefault(os.path.realpath(d), os.path.normpath(d))
    runs, first = [_read_run(d) for d in sorted(dirs.values())], {}
    for r in runs:
        if r["status"] == "done":
            key = _cell(r) + (r["seed"],)
            if key in first:
                r["status"] = "duplicate"
                r["reason"] = f"duplicate: same setting and seed as {first[key]}"
            first.setdefault(key, r["path"])
    return runs


def _label(group):
    kind, dataset, arch, epochs, n_train = group
    return f"{dataset} / {arch} / {epochs} epochs / n_train {n_train}"


def _setting(pattern, ratio):
    return f"{pattern} {ratio:g}" if isinstance(ratio, (int, float)) else f"{pattern} {ratio}"


def _order(key):
    """Sort key for (group, pattern, ratio, ...) tuples: sym before asym, ratio ascending."""
    group, pattern, ratio, *rest = key
    return (str(group), pattern != "sym", str(pattern), ratio if ratio is not None else -1,
            [str(x) for x in rest])


def _mean(values):
    v = [float(x) for x in values if x is not None]
    return float(np.mean(v)) if v else None


def _put(row, name, values, scale=1.0):
    """Set row[name_mean], row[name_std] (sample std, ddof=1; None when n < 2) over the
    non-null values, and row[name_n] only when nulls made that count differ from row's n."""
    v = [scale * float(x) for x in values if x is not None]
    row[f"{name}_mean"] = float(np.mean(v)) if v else None
    row[f"{name}_std"] = float(np.std(v, ddof=1)) if len(v) > 1 else None
    if len(v) != row["n"]:
        row[f"{name}_n"] = len(v)
    return row


def _cells(runs, kind, key, keep=lambda r: True):
    cells = {}
    for r in runs:
        if r["status"] == "done" and r["kind"] == kind and keep(r):
            cells.setdefault(key(r), []).append(r)
    return sorted(cells.items(), key=lambda kv: _order(kv[0]))


def table_accuracy(runs):
    """The paper's main table, long format: one row per (group, setting, method) with the
    final clean test accuracy (%) of network 1 over seeds, plus the paper's CIFAR-10 rows
    (source "paper") for the settings measured on cifar10."""
    def has_acc(r):
        return (r["summary"].get("test_accuracy") or {}).get("model1") is not None

    rows = []
    for (group, pattern, ratio, method), rs in _cells(
            runs, "train", lambda r: (_group(r), r["pattern"], r["ratio"], r["method"]), has_acc):
        keys = set().union(*(r["flags"] for r in rs))
        mixed = sorted(k for k in keys if len({json.dumps(r["flags"].get(k)) for r in rs}) > 1)
        row = {"table": "accuracy", "group": _label(group), "dataset": group[1],
               "setting": _setting(pattern, ratio), "method": METHOD_LABELS.get(method, method),
               "source": "measured", "n": len(rs),
               "seeds": " ".join(str(s) for s in sorted(r["seed"] for r in rs)),
               "note": "runs differ in " + ", ".join(mixed) if mixed else ""}
        rows.append(_put(row, "accuracy",
                         [r["summary"]["test_accuracy"]["model1"] for r in rs], 100.0))
    for label in dict.fromkeys(r["group"] for r in rows if r["dataset"] == "cifar10"):
        found = {r["setting"] for r in rows if r["group"] == label}
        for name, values in PAPER_CIFAR10.items():
            rows += [{"table": "accuracy", "group": label, "dataset": "cifar10",
                      "setting": setting, "method": f"{name} (paper)", "source": "paper",
                      "n": PAPER_RUNS, "accuracy_mean": m, "accuracy_std": s,
                      "note": "PAPER.md sec. 4"}
                     for setting, (m, s) in zip(PAPER_SETTINGS, values) if setting in found]
    return rows


def table_selection(runs):
    """INCV per iteration: mean (and std) over seeds of |S|, |C|, removed, LP and LR."""
    its = {}
    for (group, pattern, ratio), rs in _cells(
            runs, "train", lambda r: (_group(r), r["pattern"], r["ratio"]),
            lambda r: bool(r["summary"].get("incv"))):
        for r in rs:
            for it in r["summary"]["incv"]:
                its.setdefault((group, pattern, ratio, it.get("iteration")), []).append(it)
    rows = []
    for (group, pattern, ratio, iteration), xs in sorted(its.items(), key=lambda kv: _order(
            kv[0])):
        row = {"table": "incv_selection", "group": _label(group),
               "setting": _setting(pattern, ratio), "iteration": iteration, "n": len(xs)}
        for k in ("selected", "candidates", "removed", "label_precision", "label_recall"):
            _put(row, k, [x.get(k) for x in xs])
        rows.append(row)
    return rows


def table_noise(runs):
    """Estimated (INCV's / Co-teaching's) vs actual noise ratio per setting and method."""
    rows = []
    for (group, pattern, ratio, method), rs in _cells(
            runs, "train", lambda r: (_group(r), r["pattern"], r["ratio"], r["method"]),
            lambda r: "estimated_noise_ratio" in r["summary"]):
        row = {"table": "noise_ratio", "group": _label(group), "setting": _setting(
            pattern, ratio), "method": METHOD_LABELS.get(method, method), "n": len(rs)}
        for k in ("estimated_noise_ratio", "actual_noise_ratio"):
            _put(row, k, [r["summary"].get(k) for r in rs])
        rows.append(row)
    return rows


def table_noisy_cv(runs):
    """noisy_cv.py: measured vs theoretical held-out accuracy (w.r.t. noisy labels), LP
    and LR per setting, and the estimated vs actual noise ratio."""
    rows = []
    for (group, pattern, ratio), rs in _cells(
            runs, "cv", lambda r: (_group(r), r["pattern"], r["ratio"])):
        s = [r["summary"] for r in rs]
        row = {"table": "noisy_cv", "group": _label(group), "setting": _setting(pattern, ratio),
               "n": len(rs)}
        for name, key in (("accuracy", "noisy_accuracy"), ("label_precision",) * 2,
                          ("label_recall",) * 2):
            _put(row, name, [x.get(key) for x in s])
            row[f"{name}_theory"] = _mean((x.get("theory") or {}).get(name) for x in s)
        for k in ("estimated_noise_ratio", "actual_noise_ratio"):
            _put(row, k, [x.get(k) for x in s])
        rows.append(row)
    return rows


def table_not_included(runs):
    """Runs left out of a table, and why: unfinished, unreadable, duplicate, no test
    accuracy (--incv_only), or a seed that other settings of the same group have."""
    rows = [{"table": "not_included", "path": r["path"], "reason": r["reason"]}
            for r in runs if r["status"] != "done"]
    for r in runs:
        if r["status"] == "done" and r["kind"] == "train":
            acc = r["summary"].get("test_accuracy")
            if acc is None or acc.get("model1") is None:
                rows.append({"table": "not_included", "path": r["path"], "reason": (
                    "no test accuracy (--incv_only run): in the selection tables only"
                    if acc is None else "test_accuracy.model1 is null")})
    seeds, cells = {}, {}
    for r in runs:
        if r["seed"] is not None and r["status"] != "unreadable":
            seeds.setdefault(_group(r), set()).add(r["seed"])
            cells.setdefault(_cell(r), {})[r["seed"]] = r["path"]
    for cell, have in sorted(cells.items(), key=lambda kv: str(kv[0])):
        for s in sorted(seeds[cell[:5]] - set(have)):
            rows.append({"table": "not_included", "path": os.path.join(
                os.path.dirname(next(iter(have.values()))), f"seed{s}"),
                "reason": f"missing seed {s}: other settings of {_label(cell[:5])} have it"})
    return rows


def build_tables(runs):
    """All tables of a report: {name: rows}, in report order."""
    return {"accuracy": table_accuracy(runs), "incv_selection": table_selection(runs),
            "noise_ratio": table_noise(runs), "noisy_cv": table_noisy_cv(runs),
            "not_included": table_not_included(runs)}


def _num(value, digits=3):
    return "—" if value is None else f"{value:.{digits}f}"


def _fmt(row, name, digits=3):
    """'mean ± std' of row[name_*] ('mean' alone when n < 2; '(n=k)' when nulls were left out)."""
    mean, std = row.get(f"{name}_mean"), row.get(f"{name}_std")
    text = _num(mean, digits) + ("" if mean is None or std is None else f" ± {std:.{digits}f}")
    return text + (f" (n={row[f'{name}_n']})" if f"{name}_n" in row else "")


def _accuracy_cell(r):
    if r is None:
        return "—"
    if r["source"] == "paper":
        return _fmt(r, "accuracy", 2)
    return _fmt(r, "accuracy", 2) + f" (n={r['n']})" + (" †" if r["note"] else "")


def _markdown_table(header, body):
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
    return "\n".join([line(header), "|" + "---|" * len(header)] + [line(b) for b in body])


def _by_group(rows):
    groups = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    return groups.items()


def format_markdown(tables):
    """The report (``build_tables``' output) as Markdown: a section per non-empty table,
    a sub-table per group, then the "Not included" list."""
    out, order = ["# Results"], list(METHOD_LABELS.values())
    if tables["accuracy"]:
        out.append("\n## Clean test accuracy (%), incv_train.py")
    for label, rows in _by_group(tables["accuracy"]):
        settings = list(dict.fromkeys(r["setting"] for r in rows if r["source"] == "measured"))
        methods = sorted(dict.fromkeys(r["method"] for r in rows), key=lambda m: (
            "(paper)" in m, order.index(m) if m in order else len(order)))
        cell = {(r["method"], r["setting"]): r for r in rows}
        body = [[m] + [_accuracy_cell(cell.get((m, s))) for s in settings] for m in methods]
        out += [f"\n### {label}\n", _markdown_table(["method"] + settings, body)]
        out += [f"\n† {r['method']}, {r['setting']}: {r['note']}." for r in rows
                if r["source"] == "measured" and r["note"]]
        if rows[0]["dataset"] != "cifar10":
            out.append(f"\nNo (paper) rows: the paper's table is for CIFAR-10, not "
                       f"{rows[0]['dataset']}.")
    if tables["accuracy"]:
        out.append(
            "\nCells: final-epoch clean test accuracy of network 1 (summary "
            "`test_accuracy.model1`; Co-teaching trains two networks, Standard one), mean ± "
            "sample std (ddof=1) over seeds, n = runs (no ± when n = 1). Rows marked (paper): "
            f"PAPER.md sec. 4, CIFAR-10, {PAPER_RUNS} runs, mean ± as the paper prints it.")
    sections = (
        ("incv_selection", "INCV selection per iteration (mean over seeds)",
         ["setting", "iteration", "n", "|S|", "|C|", "removed", "LP", "LR"],
         lambda r: [r["setting"], r["iteration"], r["n"]]
         + [_num(r[f"{k}_mean"], 1) for k in ("selected", "candidates", "removed")]
         + [_num(r[f"{k}_mean"]) for k in ("label_precision", "label_recall")]),
        ("noise_ratio", "Noise ratio: estimated vs actual (mean ± sample std)",
         ["setting", "method", "n", "estimated", "actual"],
         lambda r: [r["setting"], r["method"], r["n"], _fmt(r, "estimated_noise_ratio"),
                    _fmt(r, "actual_noise_ratio")]),
        ("noisy_cv", "Noisy cross-validation, noisy_cv.py: measured vs theory (held-out "
         "half; accuracy w.r.t. the noisy labels; mean ± sample std)",
         ["setting", "n", "accuracy", "theory", "LP", "theory", "LR", "theory",
          "estimated e", "actual e"],
         lambda r: [r["setting"], r["n"]]
         + [x for k in ("accuracy", "label_precision", "label_recall")
            for x in (_fmt(r, k), _num(r[f"{k}_theory"]))]
         + [_fmt(r, "estimated_noise_ratio"), _fmt(r, "actual_noise_ratio")]))
    for name, title, header, cells in sections:
        if tables[name]:
            out.append(f"\n## {title}")
        for label, rows in _by_group(tables[name]):
            out += [f"\n### {label}\n", _markdown_table(header, [cells(r) for r in rows])]
    out.append("\n## Not included\n")
    out += [f"- `{r['path']}`: {r['reason']}" for r in tables["not_included"]] or ["None."]
    return "\n".join(out) + "\n"


def format_csv(tables):
    """Every row of every table as one CSV (column ``table`` names the table; a column a
    table lacks is empty): numbers unrounded, accuracy in %, the rest as fractions."""
    import csv
    import io

    rows = [r for rs in tables.values() for r in rs]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns or ["table"], lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    return buf.getvalue()


if __name__ == "__main__":
    import argparse

    def _table_main(args):
        tables = build_tables(collect_runs(args.paths))
        texts = {"markdown": [format_markdown(tables)], "csv": [format_csv(tables)],
                 "both": [format_markdown(tables), format_csv(tables)]}[args.format]
        if args.out is None:
            print("\n".join(texts) if args.format != "both" else
                  texts[0] + "\n```csv\n" + texts[1] + "```", end="")
            return
        base = os.path.splitext(args.out)[0]
        outs = [base + ".md", base + ".csv"] if args.format == "both" else [args.out]
        for path, text in zip(outs, texts):
            with atomic_write(path) as f:
                f.write(text)
            print(f"wrote {path}", file=sys.stderr)

    parser = argparse.ArgumentParser(prog="utils.py", description="Result tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    table = commands.add_parser(
        "table", help="tabulate finished runs of incv_train.py / noisy_cv.py",
        description="Tables from the runs (summary.json / config.json) under each PATH; "
                    "unfinished and missing runs are listed, never averaged in.")
    table.add_argument("paths", nargs="+", metavar="PATH", help="results folder(s)")
    table.add_argument("--format", choices=("markdown", "csv", "both"), default="markdown",
                       help="output format (both: Markdown, then the CSV)")
    table.add_argument("--out", metavar="FILE", default=None,
                       help="write FILE atomically instead of stdout (with --format both: "
                            "FILE's stem + .md and + .csv)")
    sys.exit(cli(_table_main, parser.parse_args()))
