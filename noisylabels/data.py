"""Datasets and input pipelines: how CIFAR, digits and .npz files are loaded, subset, split
(the input pipelines that feed training are in pipelines.py).

``load_dataset("cifar10" | "cifar100" | "digits" | "path/to/file.npz")`` returns a
:class:`Data` with float32 NHWC pixels in [0, 1] (the authors divided by 255) and int64
labels; ``load_dataset("path/to/DIR")`` an image folder (:func:`load_image_folder`), and an
.npz's ``y_train_noisy`` or a folder's ``--labels`` file the labels as given
(``Data.y_train_noisy``). ``stratified_subset`` draws the seeded ``--n_train`` subset;
``split_halves`` the random halves of noisy cross-validation. The input pipelines that feed
training are in :mod:`noisylabels.pipelines`.

Keras and TensorFlow are imported inside the functions that need them, so that the
scripts can parse their flags (and print ``--help``) before TensorFlow loads.
"""

import dataclasses
import hashlib
import os
import pickle

import numpy as np

from . import cifar_n
from .utils import rng_for

DATASETS = ("cifar10", "cifar100", "cifar10n", "cifar100n", "digits")
# The CIFAR images' side; --image_size below it downsamples them (load_dataset).
CIFAR_SIDE = 32

# md5 of each file of the official python-version archives (cifar-10-python.tar.gz,
# cifar-100-python.tar.gz), as torchvision's CIFAR10 / CIFAR100 classes list them.
OFFICIAL_MD5 = {
    "cifar10": {"data_batch_1": "c99cafc152244af753f735de768cd75f",
                "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
                "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
                "data_batch_4": "634d18415352ddfa80567beed471001a",
                "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
                "test_batch": "40351d587109b95175f43aff81a1287e"},
    "cifar100": {"train": "16019d7e3df5f24257cddd939b257f8d",
                 "test": "f0ef6b0ae62326f3e7ffdfab6717acfc"},
}
_MD5_CACHE = {}  # (real path, size, mtime_ns) -> md5: each file is hashed once per process


@dataclasses.dataclass
class Data:
    """A labelled image dataset. x_*: float32 (n, h, w, ch) in [0, 1]; y_*: int64 (n,);
    ``train_index`` (n,) int64: each training sample's position in the dataset as given
    (not the identity under ``--n_train``), so results map back to the user's samples."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    train_index: np.ndarray = None
    # Labels as given (a user's noisy labels: an npz's y_train_noisy, an image folder's
    # --labels file), or None when the scripts draw synthetic noise. ``clean_known`` is False
    # when no clean labels exist: then ``y_train`` holds the given labels too (so that
    # subsets stratify on them) and nothing is measured against it.
    y_train_noisy: np.ndarray = None
    clean_known: bool = True
    class_names: list = None    # an image folder's class folder names, index order
    train_paths: np.ndarray = None  # an image folder's files, relative to DIR/train
    # CIFAR only: {"official": bool or None, "files": {file name: md5}} (see data_provenance);
    # CIFAR-N adds its label file's name, md5 and label set (cifar_n.load_cifar_n).
    provenance: dict = None
    # CIFAR-N only: the human label set in y_train_noisy (e.g. "worse"); runs are filed
    # under it instead of "given".
    label_set: str = None

    def __post_init__(self):
        if self.train_index is None:
            self.train_index = np.arange(len(self.y_train), dtype=np.int64)

    @property
    def y_clean(self):
        """The clean training labels, or None when only the given (noisy) labels exist."""
        return self.y_train if self.clean_known else None

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])


def dataset_name(spec):
    """The name used in result paths: the dataset name, an .npz file's stem or an image
    folder's name."""
    if os.path.isdir(spec):
        return os.path.basename(os.path.abspath(spec))
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


def file_md5(path):
    """md5 hex digest of a file, computed once per process for an unchanged file."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _MD5_CACHE:
        h = hashlib.md5()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _MD5_CACHE[key] = h.hexdigest()
    return _MD5_CACHE[key]


def data_provenance(name, folder):
    """Whether the CIFAR files in ``folder`` are the official archive's, by their md5s.

    Returns
    -------
    dict
        ``{"official": bool, "files": {file name: md5}}``: ``official`` is True only when
        every file matches :data:`OFFICIAL_MD5` (a re-encoded copy, e.g. JPEG-decoded, is not).
    """
    files = {f: file_md5(os.path.join(folder, f)) for f in OFFICIAL_MD5[name]}
    return {"official": files == OFFICIAL_MD5[name], "files": files}


def describe_provenance(provenance):
    """One line for a run's output on where its CIFAR data came from (None: not CIFAR)."""
    if provenance is None:
        return None
    if provenance.get("official"):
        line = "data: the official CIFAR files (md5 checked)"
    elif provenance.get("official") is None:
        line = f"data: {provenance.get('source', 'unknown source')} (md5 not checked)"
    else:
        line = ("data: NOT the official CIFAR files (md5 differs: e.g. a re-encoded copy); "
                "results from it are labelled so")
    if "label_file" in provenance:  # CIFAR-N
        line += (f"; labels: {provenance['label_file']} '{provenance['label_set']}' ("
                 + ("the released file, md5 checked" if provenance["label_file_official"]
                    else "md5 differs from the released file") + ")")
    return line


def _load_cifar(name, data_dir, download):
    import keras

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
                np.concatenate(xs[n:]), np.concatenate(ys[n:]), data_provenance(name, folder))
    if not download:
        raise _missing(name, folder, url)
    try:
        (xtr, ytr), (xte, yte) = keras_loader()
    except Exception as err:  # offline: say where the files go instead of a URL error
        raise _missing(name, folder, url) from err
    return xtr, ytr.reshape(-1), xte, yte.reshape(-1), {
        "official": None, "source": "keras.datasets download", "files": {}}


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
    try:
        with np.load(path, allow_pickle=False) as f:
            files = set(getattr(f, "files", ()))
            # y_train_noisy (labels as given) may stand in for the clean y_train.
            have = files | ({"y_train"} if "y_train_noisy" in files else set())
            missing = {"x_train", "y_train", "x_test", "y_test"} - have
            if missing:
                raise ValueError(f"{path}: missing arrays {sorted(missing)}; an .npz dataset "
                                 "needs x_train, y_train (or y_train_noisy), x_test, y_test")
            arrays = [f[k] if k in files else None
                      for k in ("x_train", "y_train", "x_test", "y_test", "y_train_noisy")]
    except Exception as err:  # empty, truncated or foreign files: zipfile, EOF, pickle errors
        if isinstance(err, ValueError) and str(err).startswith(f"{path}:"):
            raise
        why = ("the file is empty" if os.path.getsize(path) == 0 else
               "not a numpy .npz archive" if "pickled" in str(err) else
               f"{type(err).__name__}: {err}")
        raise ValueError(f"--dataset file '{path}' is not a readable .npz ({why}): write it "
                         "with numpy.savez(path, x_train=..., y_train=..., x_test=..., "
                         "y_test=...)") from None
    for k, x in (("x_train", arrays[0]), ("x_test", arrays[2])):
        if x.ndim not in (3, 4):
            raise ValueError(f"{path}: {k} must be (n, h, w) or (n, h, w, channels), "
                             f"got shape {x.shape}")
        if len(x) == 0 or x.size == 0:
            raise ValueError(f"{path}: {k} holds no images (shape {x.shape}): an .npz dataset "
                             "needs at least one training and one test image")
        if not np.issubdtype(x.dtype, np.number):
            raise ValueError(f"{path}: {k} must hold numbers (uint8 or floats), got {x.dtype}")
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            raise ValueError(f"{path}: {k} holds {int((~np.isfinite(x)).sum())} NaN or "
                             "infinite pixel values: fix or drop those images")
        if x.dtype != np.uint8 and (x.min() < 0 or x.max() > 1):
            raise ValueError(f"{path}: {k} must be uint8 (0..255) or floats in [0, 1], got "
                             f"{x.dtype} in [{x.min()}, {x.max()}]")
    return arrays


def check_npz_labels(path, y_train, y_test):
    """The labels of an .npz dataset must be the classes 0..c-1, each present in the
    training set (an empty class would be a class noise can flip into but no sample has),
    and the test set may use only those classes."""
    present = np.unique(y_train)
    c = len(present)
    shown = (" ".join(str(v) for v in present) if c <= 20
             else f"{c} classes from {present.min()} to {present.max()}")
    if not np.array_equal(present, np.arange(c)):
        raise ValueError(f"{path}: y_train must use the classes 0..{c - 1} (each at least "
                         f"once), found {shown}: map the labels to 0..{c - 1}")
    extra = np.setdiff1d(np.unique(y_test), present)
    if len(extra):
        raise ValueError(f"{path}: y_test holds classes the training set lacks "
                         f"({' '.join(str(v) for v in extra[:10])}); y_train has {shown}: "
                         "fix the test labels or drop those samples")


def to_unit_float(x):
    """Images as float32 NHWC in [0, 1]: (n, h, w) gains a channel axis, uint8 is divided
    by 255 (as the authors did), floats are kept as they are."""
    x = x[..., None] if x.ndim == 3 else x
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    return x.astype(np.float32)


def load_dataset(spec, *, data_dir="data", download=True, image_size=32, labels=None,
                 folder_labels="clean", label_set=None):
    """Load a dataset by name, ``.npz`` path or image folder.

    Parameters
    ----------
    spec : str
        "cifar10", "cifar100" (official python pickles under ``data_dir``), "cifar10n",
        "cifar100n" (those images with CIFAR-N's human labels, see :mod:`noisylabels.cifar_n`;
        the label file in ``data_dir``), "digits"
        (scikit-learn's bundled 8x8 digits, fixed stratified 75/25 split) or a path to an
        ``.npz`` holding x_train, y_train, x_test, y_test (``y_train_noisy``, labels as
        given, may be beside or instead of y_train), or an image folder (see
        :func:`load_image_folder`).
    data_dir : str
        Folder holding ``cifar-10-batches-py`` / ``cifar-100-python``.
    download : bool
        When the CIFAR files are absent, try Keras' own download before failing.
    image_size : int
        Image folders: side the images are resized to. CIFAR (native 32): a divisor of 32
        (16, 8, ...) averages each block of pixels (:func:`downsample`), a cheaper scale for
        CPU runs; 32 keeps the images. Other datasets: 32 only (the default).
    labels : str, optional
        Image folders only: CSV of given labels (see :func:`load_image_folder`).
    folder_labels : {"clean", "given"}
        Image folders only: what the class folders are (see :func:`load_image_folder`).
    label_set : str, optional
        CIFAR-N only: the human label set (``--label_set``; None: the noisiest).

    Returns
    -------
    Data
        Pixels float32 in [0, 1], shape (n, h, w, ch); labels int64 (n,).
    """
    given = None
    if label_set is not None and spec not in cifar_n.DATASETS:
        raise ValueError(f"--label_set is for --dataset {' / '.join(cifar_n.DATASETS)}, not "
                         f"'{spec}': drop it")
    if os.path.isdir(spec):
        return load_image_folder(spec, image_size=image_size, labels=labels,
                                 folder_labels=folder_labels)
    if labels is not None or folder_labels != "clean":
        raise ValueError("--labels / --folder_labels are for an image folder --dataset; for an "
                         ".npz put the given labels in its y_train_noisy array")
    provenance = None
    if int(image_size) != CIFAR_SIDE and spec not in ("cifar10", "cifar100", *cifar_n.DATASETS):
        raise ValueError(f"--image_size is for image folders and the CIFAR datasets, not "
                         f"'{spec}': drop it")
    if spec in ("cifar10", "cifar100"):
        xtr, ytr, xte, yte, provenance = _load_cifar(spec, data_dir, download)
    elif spec in cifar_n.DATASETS:
        xtr, ytr, xte, yte, given, label_set, provenance = cifar_n.load_cifar_n(
            spec, label_set=label_set, data_dir=data_dir,
            cifar_loader=lambda base: _load_cifar(base, data_dir, download))
    elif spec == "digits":
        xtr, ytr, xte, yte = _load_digits()
    elif spec.endswith(".npz"):
        xtr, ytr, xte, yte, given = _load_npz(spec)
    else:
        raise ValueError(f"unknown --dataset '{spec}'; choose one of {', '.join(DATASETS)}, "
                         "give a path ending in .npz or an image folder (DIR/train/<class>/, "
                         "DIR/test/<class>/)")
    clean_known = ytr is not None
    if given is not None:
        given = np.asarray(given).reshape(-1)
        ytr = given if ytr is None else ytr
        if np.asarray(ytr).reshape(-1).shape != given.shape:
            raise ValueError(f"{spec}: y_train and y_train_noisy differ in length: "
                             f"{np.asarray(ytr).size} vs {given.size}")
    ytr, yte = np.asarray(ytr).reshape(-1), np.asarray(yte).reshape(-1)
    for k, y in (("y_train", ytr), ("y_test", yte)) + ((("y_train_noisy", given),)
                                                         if given is not None else ()):
        if not np.issubdtype(y.dtype, np.integer) or not len(y) or y.min() < 0:
            raise ValueError(f"{spec}: {k} must hold non-negative integer class labels")
    if spec.endswith(".npz"):
        check_npz_labels(spec, ytr, yte)
    xtr, xte = to_unit_float(xtr), to_unit_float(xte)
    if int(image_size) != CIFAR_SIDE:  # the CIFAR datasets (checked above)
        xtr, xte = downsample(xtr, int(image_size)), downsample(xte, int(image_size))
    if xtr.shape[1:] != xte.shape[1:]:
        raise ValueError(f"{spec}: x_train and x_test images differ in shape: "
                         f"{xtr.shape[1:]} vs {xte.shape[1:]}")
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise ValueError(f"{spec}: images and labels differ in number: {len(xtr)} vs "
                         f"{len(ytr)} (train), {len(xte)} vs {len(yte)} (test)")
    num_classes = int(max(ytr.max(), yte.max(), -1 if given is None else given.max())) + 1
    return Data(dataset_name(spec), xtr, ytr.astype(np.int64), xte, yte.astype(np.int64),
                num_classes, y_train_noisy=None if given is None else given.astype(np.int64),
                clean_known=clean_known, provenance=provenance, label_set=label_set)


def downsample(x, size):
    """Images ``x`` (n, h, h, ch) reduced to (n, size, size, ch) by averaging each
    (h/size) x (h/size) block of pixels (box filter: exact, deterministic, no library).

    Raises
    ------
    ValueError
        If ``size`` does not divide the images' side.
    """
    side = x.shape[1]
    if size < 1 or side % size or x.shape[2] != side:
        divisors = [d for d in range(1, side + 1) if side % d == 0]
        raise ValueError(f"--image_size {size}: the {side}x{x.shape[2]} images are downsampled "
                         f"by whole blocks, so choose a divisor of {side}: "
                         f"{', '.join(map(str, divisors))}")
    f = side // size
    n, ch = x.shape[0], x.shape[3]
    out = x.reshape(n, size, f, size, f, ch).mean(axis=(2, 4), dtype=np.float64)
    return out.astype(np.float32)


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def _class_folders(folder, flag="--dataset"):
    """The class sub-folders of ``folder`` (sorted), or a ValueError naming the folder."""
    if not os.path.isdir(folder):
        raise ValueError(f"{flag}: expected the folder '{folder}' (layout: DIR/train/<class>/"
                         "*.jpg|png and DIR/test/<class>/...)")
    entries = sorted(os.listdir(folder))
    classes = [e for e in entries if os.path.isdir(os.path.join(folder, e))]
    stray = [e for e in entries if os.path.isfile(os.path.join(folder, e))
             and e.lower().endswith(IMAGE_EXTENSIONS)]
    if stray or len(classes) < 2:
        raise ValueError(
            f"{flag}: '{folder}' must hold one sub-folder per class (at least 2) with the "
            f"images inside, found {len(classes)} sub-folders"
            + (f" and images directly in it (e.g. '{stray[0]}')" if stray else ""))
    for c in classes:
        if not any(f.lower().endswith(IMAGE_EXTENSIONS)
                   for _, _, files in os.walk(os.path.join(folder, c)) for f in files):
            raise ValueError(f"{flag}: class folder '{os.path.join(folder, c)}' holds no "
                             f"image ({', '.join(IMAGE_EXTENSIONS)})")
    return classes


def _read_folder_images(folder, class_names, image_size):
    """Images of ``folder/<class>/`` resized (bilinear) to image_size, as uint8, with their
    labels and paths relative to ``folder``; Keras' loader, in its file order."""
    import keras

    ds = keras.utils.image_dataset_from_directory(
        folder, labels="inferred", label_mode="int", class_names=class_names,
        color_mode="rgb", batch_size=None, image_size=(image_size, image_size),
        shuffle=False, verbose=False)
    paths = [os.path.relpath(p, folder).replace(os.sep, "/") for p in ds.file_paths]
    xs, ys = [], []
    for x, y in ds.as_numpy_iterator():
        xs.append(np.clip(np.rint(x), 0, 255).astype(np.uint8))  # as a uint8 image file
        ys.append(y)
    return np.stack(xs), np.asarray(ys, np.int64), np.array(paths)


def read_labels_file(path, train_paths, class_names):
    """Given labels from a CSV with a header ``path,label``: one row per training image,
    ``path`` relative to DIR/train (as ``train_paths``), ``label`` a class name or index.

    Returns
    -------
    (n,) int64 labels in the order of ``train_paths``.
    """
    import csv

    if not os.path.isfile(path):
        raise FileNotFoundError(f"--labels file '{path}' does not exist")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"path", "label"} <= set(reader.fieldnames):
            raise ValueError(f"--labels '{path}': needs a header row 'path,label', got "
                             f"{reader.fieldnames}")
        rows = list(reader)
    where = {p: i for i, p in enumerate(train_paths)}
    names = {n: i for i, n in enumerate(class_names)}
    labels = np.full(len(train_paths), -1, np.int64)
    for line, r in enumerate(rows, start=2):
        p, lab = r["path"].strip().replace("\\", "/"), r["label"].strip()
        if p not in where:
            raise ValueError(f"--labels '{path}' line {line}: '{p}' is not an image under "
                             "DIR/train (paths are relative to it, e.g. 'cat/001.jpg')")
        if labels[where[p]] >= 0:
            raise ValueError(f"--labels '{path}' line {line}: '{p}' is listed twice")
        if lab in names:
            labels[where[p]] = names[lab]
        elif lab.isdigit() and int(lab) < len(class_names):
            labels[where[p]] = int(lab)
        else:
            raise ValueError(f"--labels '{path}' line {line}: label '{lab}' is neither a class "
                             f"name ({', '.join(class_names[:5])}...) nor an index below "
                             f"{len(class_names)}")
    if (labels < 0).any():
        miss = train_paths[np.flatnonzero(labels < 0)[0]]
        raise ValueError(f"--labels '{path}': {int((labels < 0).sum())} training images have "
                         f"no row, e.g. '{miss}'; give every image of DIR/train a label")
    return labels


def load_image_folder(folder, *, image_size=32, labels=None, folder_labels="clean"):
    """An image-folder dataset in memory: ``folder/train/<class>/*.jpg|png`` and
    ``folder/test/<class>/...`` (the layout Keras' ``image_dataset_from_directory`` reads).

    Images are decoded as RGB, resized (bilinear) to ``image_size`` x ``image_size``, kept
    as uint8 values divided by 255 (as CIFAR), which suits datasets that fit in memory.
    Folder names are the classes (sorted) and the clean labels; with ``labels`` (a CSV
    ``path,label``, see :func:`read_labels_file`) those are the labels as given. With
    ``folder_labels="given"`` the folders themselves hold the labels as given (web or
    crowd labels, e.g. WebVision) and no clean labels exist.

    Returns
    -------
    Data
        With ``class_names`` and ``train_paths`` (relative to ``folder/train``).
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--dataset folder '{folder}' does not exist")
    if int(image_size) < 1:
        raise ValueError(f"--image_size must be positive, got {image_size}")
    if folder_labels not in ("clean", "given"):
        raise ValueError(f"--folder_labels must be 'clean' or 'given', got {folder_labels!r}")
    if folder_labels == "given" and labels is not None:
        raise ValueError("--folder_labels given and --labels both name the labels as given: "
                         "drop one of them")
    train, test = os.path.join(folder, "train"), os.path.join(folder, "test")
    classes = _class_folders(train)
    test_classes = _class_folders(test)
    if test_classes != classes:
        extra = sorted(set(test_classes) ^ set(classes))
        raise ValueError(f"--dataset: '{train}' and '{test}' must have the same class folders; "
                         f"they differ in {extra[:5]}")
    xtr, ytr, paths = _read_folder_images(train, classes, int(image_size))
    xte, yte, _ = _read_folder_images(test, classes, int(image_size))
    given = None if labels is None else read_labels_file(labels, paths, classes)
    if folder_labels == "given":
        given = ytr.copy()
    return Data(dataset_name(folder), to_unit_float(xtr), ytr, to_unit_float(xte), yte,
                len(classes), y_train_noisy=given, clean_known=folder_labels == "clean",
                class_names=list(classes), train_paths=paths)


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


def split_halves(idx, *, rng, larger_first=False, sort=False):
    """A random partition of ``idx`` into two halves: the one half-split of the method.

    The halves are ``idx`` shuffled by ``rng`` (``Generator.shuffle``, so the draw equals
    ``rng.permutation(len(idx))`` for ``idx = arange(n)``), cut at ``len(idx) // 2`` (the
    second half gets the odd one out: INCV's split of C, as the authors' INCV.py, and the
    one 2-fold round the selectors share with INCV's first iteration) or, with
    ``larger_first``, at ``(len(idx) + 1) // 2`` (noisy_cv.py's halves and plain
    Co-teaching's noise-estimate run).

    Parameters
    ----------
    idx : int array or int
        The indices to split; an int ``n`` means ``arange(n)``.
    rng : numpy.random.Generator
    larger_first : bool
        Put the extra sample of an odd count in the first half instead of the second.
    sort : bool
        Return each half sorted (noisy_cv.py's); else in shuffled order (INCV's).

    Returns
    -------
    (first, second) : two int arrays
    """
    idx = np.arange(idx) if np.isscalar(idx) else np.array(idx)
    rng.shuffle(idx)
    cut = (len(idx) + 1) // 2 if larger_first else len(idx) // 2
    first, second = idx[:cut], idx[cut:]
    return (np.sort(first), np.sort(second)) if sort else (first, second)


def subset_training(data, n_train, *, seed, printer=None):
    """``data`` with its training part cut, in place, to a seeded class-stratified subset of
    ``n_train`` samples (every one when None or larger than the set: with a note to
    ``printer``). Labels as given, image paths and ``train_index`` follow the subset."""
    if n_train is not None and n_train > len(data.y_train) and printer is not None:
        printer(f"note: --n_train {n_train} is more than the {len(data.y_train)} training "
                f"images of {data.name}: all {len(data.y_train)} are used")
    subset = stratified_subset(data.y_train, n_train, seed=seed)
    data.x_train, data.y_train = data.x_train[subset], data.y_train[subset]
    data.train_index = data.train_index[subset]
    if data.y_train_noisy is not None:
        data.y_train_noisy = data.y_train_noisy[subset]
    if data.train_paths is not None:
        data.train_paths = data.train_paths[subset]
    return data
