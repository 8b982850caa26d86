"""Plumbing both scripts share: seeded random streams, run directories that never clobber
an earlier run, atomic JSON / npz / figure writes, the resolved run configuration, the
shared command-line flags and the error-reporting entry point.

Nothing here imports Keras or TensorFlow at module level (the scripts parse their flags
before TensorFlow loads), nothing runs at import, and nothing prints (callers pass a
``printer`` where progress should be shown).
"""

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np

# The networks of models.MODEL_NAMES, as a literal so that --help needs no TensorFlow
# (tests/test_models.py checks the two agree).
ARCHS = ("cnn", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def rng_for(seed, purpose):
    """A numpy Generator for one purpose ("noise", "split", ...) of one ``--seed``.

    Separate streams keep, e.g., the noisy labels unchanged when the subset size changes
    the number of draws made for the split. crc32 (not ``hash``) is stable across runs.
    """
    return np.random.default_rng([int(seed), zlib.crc32(purpose.encode())])


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


def read_jsonl(path):
    """The rows of a JSON-lines file (one object per line); [] when it does not exist."""
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


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
    import keras
    import tensorflow as tf

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.abspath(__file__)),
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"args": dict(vars(args)), **extra,
            "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
            "versions": {"python": platform.python_version(), "keras": keras.__version__,
                         "backend": keras.backend.backend(), "tensorflow": tf.__version__,
                         "numpy": np.__version__},
            "git_commit": commit, "host": platform.node(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def load_tensorflow():
    """Import TensorFlow (and Keras) quietly, once, with the scripts' settings.

    Call it at the start of a script's ``main``, before any module that imports Keras.
    Environment defaults (an explicit setting wins): ``TF_ENABLE_ONEDNN_OPTS=1``, oneDNN
    kernels, which TensorFlow enables by itself only on AVX-512 CPUs although they train
    1.4-1.5x faster on AVX2 CPUs too (tests/benchmark.py --onednn off; only the float
    rounding order changes); ``TF_CPP_MIN_LOG_LEVEL=3``, no C++ log lines such as "Could not
    find cuda drivers" on a CPU machine. The lines TensorFlow writes while it loads, before
    its logging is set up, ignore that level: they are held back and shown only when the
    import fails or ``TF_CPP_MIN_LOG_LEVEL`` was set by the user.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    user_level = "TF_CPP_MIN_LOG_LEVEL" in os.environ
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            import keras  # noqa: F401  (loads TensorFlow, its backend)
            import tensorflow as tf
        except BaseException:
            user_level = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if user_level:
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))
    return tf


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
    import data  # here, not at the top: data and devices import utils
    import devices
    import noise

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
    p.add_argument("--arch", type=str, default=arch, choices=ARCHS, help=arch_help)
    p.add_argument("--batch_size", type=int, default=128, help=batch_help)
    p.add_argument("--lr", type=float, default=1e-3, help="initial Adam learning rate")
    p.add_argument("--augment", type=str, default="auto", choices=data.AUGMENTATIONS,
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
    p.add_argument("--devices", type=str, default="default", choices=devices.DEVICES,
                   help=devices.DEVICES_HELP)
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                   help="Keras progress: 0 silent, 1 progress bar, 2 one line per epoch")
    p.add_argument("--precision", type=str, default="float32", choices=PRECISIONS,
                   help="Keras dtype policy: float32 (the paper's numerics); mixed_bfloat16 "
                        "for CPUs with AVX-512 BF16 / AMX (and recent GPUs); mixed_float16 "
                        "for GPU tensor cores (with loss scaling). Softmax outputs and losses "
                        "stay float32 (see README, Speed)")


def set_precision(precision):
    """Set Keras' global dtype policy for ``--precision`` (after :func:`load_tensorflow`,
    before any model is built). The networks' softmax layers are float32 whatever the
    policy (models.build_model)."""
    import keras

    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {PRECISIONS}, got {precision!r}")
    keras.mixed_precision.set_global_policy(precision)


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
