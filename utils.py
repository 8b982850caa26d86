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
    """A tf.data pipeline: shuffle each epoch, batch, augment in the pipeline, prefetch."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    augmenter = make_augmenter(augment, seed=seed)
    if augmenter is not None:
        ds = ds.map(lambda xb, yb: (augmenter(xb, training=True), yb),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def make_coteaching_dataset(x, y, clean, s_idx, c_idx, *, batch_size, c_batch_size,
                            augment="none", seed=0):
    """Batches for (modified) Co-teaching: each epoch is one pass over S in batches of
    ``batch_size``; when ``c_batch_size`` > 0 each S batch is joined by ``c_batch_size``
    samples drawn from C (reshuffled, cycling; PAPER.md sec. 4).

    Yields ``({"image": (b, h, w, ch), "from_s": (b,) float32, "clean": (b,) float32}, y)``
    with the S part first. ``clean`` (true label == noisy label) is for tracking only.
    """
    import tensorflow as tf

    def part(idx, flag, size, seed_, repeat):
        ds = tf.data.Dataset.from_tensor_slices(
            (x[idx], y[idx], clean[idx].astype(np.float32),
             np.full(len(idx), flag, np.float32)))
        ds = ds.shuffle(len(idx), seed=seed_, reshuffle_each_iteration=True)
        return ds.repeat().batch(size, drop_remainder=True) if repeat else ds.batch(size)

    ds = part(s_idx, 1.0, batch_size, seed, False)
    if c_batch_size > 0 and len(c_idx):
        ds = tf.data.Dataset.zip(ds, part(c_idx, 0.0, c_batch_size, seed + 1, True)).map(
            lambda a, b: tuple(tf.concat([u, v], 0) for u, v in zip(a, b)))
    augmenter = make_augmenter(augment, seed=seed)

    def to_inputs(xb, yb, cb, fb):
        if augmenter is not None:
            xb = augmenter(xb, training=True)
        return {"image": xb, "from_s": fb, "clean": cb}, yb

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


def compile_classifier(model, *, lr=1e-3):
    """Adam + sparse cross-entropy on softmax outputs + accuracy, as the authors compiled."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
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
