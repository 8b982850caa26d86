"""CIFAR-10N / CIFAR-100N: the CIFAR training sets with real human labels (Wei et al.,
"Learning with Noisy Labels Revisited: A Study Using Real-World Human Annotations", ICLR
2022, arXiv:2110.12088; files from github.com/UCSC-REAL/cifar-10-100n, folder ``data/``).

``CIFAR-10_human.pt`` / ``CIFAR-100_human.pt`` are ``torch.save`` files of a dict of numpy
arrays: a zip archive holding one pickle (``<folder>/data.pkl``). They are read here with
``zipfile`` and a restricted unpickler (numpy arrays and plain Python values only), so
neither torch is needed nor can the file run code. The labels are indexed in the
python-version CIFAR training order; the file's ``clean_label`` must equal the CIFAR
training labels, which :func:`check_order` verifies.

The files are licensed CC BY-NC 4.0: users download them; this project ships none.
"""

import io
import os
import pickle
import zipfile

import numpy as np

RELEASE_URL = "https://github.com/UCSC-REAL/cifar-10-100n/tree/main/data"

# name -> (CIFAR images it labels, label file in --data_dir, md5 of the released file)
DATASETS = {
    "cifar10n": ("cifar10", "CIFAR-10_human.pt", "96644db5574813cae939af5f7f2a0aec"),
    "cifar100n": ("cifar100", "CIFAR-100_human.pt", "a67b45c1d7992051865b5c755bd68bb1"),
}
# --label_set -> key in the file; the first of each is the default (the noisiest set).
LABEL_SETS = {
    "cifar10n": {"worse": "worse_label", "aggre": "aggre_label", "random1": "random_label1",
                 "random2": "random_label2", "random3": "random_label3"},
    "cifar100n": {"noisy": "noisy_label"},
}
ALL_LABEL_SETS = tuple(s for sets in LABEL_SETS.values() for s in sets)

# What the restricted unpickler lets a label file construct (numpy 1 and 2 module names).
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
            ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}


def default_label_set(name):
    """The noisiest label set of a CIFAR-N dataset (``worse`` / ``noisy``)."""
    return next(iter(LABEL_SETS[name]))


def check_label_set(name, label_set):
    """The label set to use for ``name`` (its default for None); ValueError naming
    ``--label_set`` if the set does not belong to that dataset."""
    if label_set is None:
        return default_label_set(name)
    if label_set not in LABEL_SETS[name]:
        raise ValueError(f"--label_set {label_set} is not a label set of {name}: choose one "
                         f"of {', '.join(LABEL_SETS[name])}")
    return label_set


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_label_file(path):
    """The arrays of a CIFAR-N ``.pt`` file, without torch.

    Parameters
    ----------
    path : str
        A ``torch.save`` zip archive holding one ``*/data.pkl`` pickle of a dict.

    Returns
    -------
    dict of str -> (n,) int64 ndarray

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        Not a zip archive, no single ``data.pkl`` in it, a pickle that is not a dict of
        label arrays, or one that would construct anything but numpy arrays.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CIFAR-N label file '{path}' does not exist")
    where = f"CIFAR-N label file '{path}'"
    try:
        with zipfile.ZipFile(path) as z:
            pkls = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(pkls) != 1:
                raise ValueError(f"{where}: expected one data.pkl in the archive (as torch.save "
                                 f"writes it), found {len(pkls)}: download it again")
            raw = z.read(pkls[0])
    except zipfile.BadZipFile:
        raise ValueError(f"{where} is not a torch.save zip archive (truncated or another "
                         f"file?): download it again from {RELEASE_URL}") from None
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(raw)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, KeyError) as err:  # truncated pickles, refused classes
        raise ValueError(f"{where}: cannot read its pickle ({type(err).__name__}: {err}): "
                         f"download it again from {RELEASE_URL}") from None
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{where}: expected a dict of label arrays, got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        a = np.asarray(v)
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{where}: '{k}' is not a 1-d array of integer labels "
                             f"(shape {a.shape}, {a.dtype})")
        out[str(k)] = a.astype(np.int64)
    return out


def check_order(labels, y_train, *, path, num_classes):
    """ValueError unless the file's ``clean_label`` is the CIFAR training labels in order.

    Parameters
    ----------
    labels : dict
        From :func:`read_label_file`.
    y_train : (n,) int
        The CIFAR training labels as loaded (python-version order).
    """
    where = f"CIFAR-N label file '{path}'"
    if "clean_label" not in labels:
        raise ValueError(f"{where} has no clean_label array (keys: {', '.join(labels)}): "
                         "is it a CIFAR-N file?")
    clean = labels["clean_label"]
    if clean.shape != y_train.shape:
        raise ValueError(f"{where} labels {len(clean)} images, the CIFAR training set has "
                         f"{len(y_train)}: wrong file for this dataset?")
    if clean.max() >= num_classes:
        raise ValueError(f"{where} uses class {int(clean.max())}, the CIFAR images have "
                         f"{num_classes} classes: wrong file for this dataset?")
    diff = np.flatnonzero(clean != y_train)
    if diff.size:
        raise ValueError(f"{where}: its clean_label differs from the CIFAR training labels "
                         f"at {diff.size} of {len(y_train)} images (first: index "
                         f"{int(diff[0])}): wrong file, or the images are not in the "
                         "python-version order (cifar-*-python batches)")


def load_cifar_n(name, *, label_set, data_dir, cifar_loader):
    """The labels of a CIFAR-N dataset, checked against the CIFAR images.

    Parameters
    ----------
    name : {"cifar10n", "cifar100n"}
    label_set : str or None
        A key of :data:`LABEL_SETS` [name]; None for the default (noisiest) set.
    data_dir : str
        Folder holding the label file (beside ``cifar-10-batches-py`` / ``cifar-100-python``).
    cifar_loader : callable
        ``cifar_loader(base)`` -> (x_train, y_train, x_test, y_test, provenance) of the
        CIFAR images (``base``: "cifar10" / "cifar100").

    Returns
    -------
    tuple
        (x_train, y_train clean, x_test, y_test, y_given (n,) int64, label_set, provenance):
        ``provenance`` is the CIFAR images' with the label file's name, md5 and whether it
        is the released file added.
    """
    from .data import file_md5

    base, fname, md5 = DATASETS[name]
    label_set = check_label_set(name, label_set)
    path = os.path.join(data_dir, fname)
    if not os.path.isfile(path):  # before the images load: the cheap check first
        raise FileNotFoundError(
            f"{name} needs the label file '{path}': download {fname} from {RELEASE_URL} "
            "(CC BY-NC 4.0) into --data_dir, beside the CIFAR python-version folder")
    labels = read_label_file(path)
    xtr, ytr, xte, yte, provenance = cifar_loader(base)
    num_classes = int(max(ytr.max(), yte.max())) + 1
    check_order(labels, ytr, path=path, num_classes=num_classes)
    key = LABEL_SETS[name][label_set]
    if key not in labels:
        raise ValueError(f"CIFAR-N label file '{path}' has no {key} array for --label_set "
                         f"{label_set} (keys: {', '.join(labels)})")
    given = labels[key]
    if given.shape != ytr.shape or given.min() < 0 or given.max() >= num_classes:
        raise ValueError(f"CIFAR-N label file '{path}': {key} must hold {len(ytr)} labels in "
                         f"0..{num_classes - 1}")
    digest = file_md5(path)
    provenance = {**(provenance or {}), "label_file": fname, "label_file_md5": digest,
                  "label_file_official": digest == md5, "label_set": label_set}
    return xtr, ytr, xte, yte, given, label_set, provenance
