"""Plumbing both scripts share: seeded random streams, run directories that never clobber
an earlier run, atomic JSON / npz / figure writes, the resolved run configuration, loading
the Keras backend (TensorFlow quietly) and the error-reporting entry point. The shared flags
are in flags.py, the progress lines in progress.py.

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

from . import threads as _threads


def rng_for(seed, purpose):
    """A numpy Generator for one purpose ("noise", "split", ...) of one ``--seed``.

    Separate streams keep, e.g., the noisy labels unchanged when the subset size changes
    the number of draws made for the split. crc32 (not ``hash``) is stable across runs.
    """
    return np.random.default_rng([int(seed), zlib.crc32(purpose.encode())])


LOCK_PREFIX = ".lock"  # locks.LOCK_NAME, and its ".lock.takeover" mutex


def run_files(path):
    """The entries of a run directory but its lock (locks.py): what a run wrote."""
    return [n for n in os.listdir(path) if not n.startswith(LOCK_PREFIX)]


def prepare_run_dir(path, *, overwrite=False, resume=False):
    """Create a run directory; refuse to touch an earlier run's unless told.

    overwrite: delete what is there first. resume: keep it (the caller continues it).
    Otherwise an existing non-empty directory raises FileExistsError naming the flags.
    """
    if os.path.isdir(path) and run_files(path):
        if overwrite:
            for name in run_files(path):  # not the lock this process may hold
                full = os.path.join(path, name)
                if os.path.isdir(full) and not os.path.islink(full):
                    shutil.rmtree(full)
                else:
                    os.remove(full)
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


def jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())  # a numpy NaN / inf becomes null too
    if isinstance(obj, float) and not np.isfinite(obj):
        return None  # strict JSON has no NaN
    return obj


def write_json(path, obj):
    """Atomically write ``obj`` (numpy values allowed; NaN -> null) as indented JSON."""
    with atomic_write(path) as f:
        json.dump(jsonable(obj), f, indent=2)
        f.write("\n")


def jsonl_line(row):
    """One strict-JSON line (numpy values allowed; NaN and infinities -> null), newline
    included: every JSON-lines writer goes through it, so a reader never meets ``NaN``."""
    return json.dumps(jsonable(row), allow_nan=False) + "\n"


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


# Flags that choose which part of a grid a process runs (or only list it): not part of what
# a run is, so config.json leaves them out (a run made by task 3 of 8 and one made by a
# single process are the same run, for --resume and for table.py alike).
NOT_RECORDED = ("list_runs", "task", "num_tasks")


def run_config(args, **extra):
    """The resolved configuration of a run: every flag (but :data:`NOT_RECORDED`), plus
    versions and provenance."""
    import keras

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.abspath(__file__)),
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    recorded = {k: v for k, v in vars(args).items() if k not in NOT_RECORDED}
    return {"args": recorded, **extra,
            "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
            "versions": {"python": platform.python_version(), "keras": keras.__version__,
                         "backend": keras.backend.backend(), **backend_versions(),
                         "numpy": np.__version__},
            "git_commit": commit, "host": platform.node(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


# --backend: Keras 3's backends and the package each needs (import name, pip name).
BACKENDS = ("tensorflow", "jax", "torch")
BACKEND_PACKAGES = {"tensorflow": ("tensorflow", "tensorflow==2.21.0"),
                    "jax": ("jax", "jax==0.10.2 jaxlib==0.10.2"),
                    "torch": ("torch", "torch==2.13.0 (CPU build; see docs/backends.md for "
                                       "CUDA)")}


def resolve_backend(name=None):
    """The Keras backend a run uses: ``name`` (``--backend``) if given, else the
    ``KERAS_BACKEND`` environment variable, else "tensorflow" (the project's default, which
    also wins over a backend set in ~/.keras/keras.json, so that a run is what its flags
    and environment say). Raises ValueError for an unknown name."""
    chosen = name or os.environ.get("KERAS_BACKEND") or "tensorflow"
    if chosen not in BACKENDS:
        where = "--backend" if name else "KERAS_BACKEND"
        raise ValueError(f"{where} '{chosen}' is not a Keras backend this project runs on: "
                         f"choose one of {', '.join(BACKENDS)}")
    return chosen


def backend_versions():
    """``{package: version}`` of the backend frameworks loaded in this process."""
    out = {}
    for pkg in BACKENDS:
        mod = sys.modules.get(pkg)
        if mod is not None:
            out[pkg] = getattr(mod, "__version__", None)
    return out


def load_backend(name=None, *, threads=None):
    """Choose Keras' backend and import Keras (quietly, once) with the scripts' settings.

    ``threads``: the thread settings to give TensorFlow before it runs its first op (a
    ``threads.choose_threads`` dict; None leaves TensorFlow's defaults), see threads.apply.

    Call it at the start of a script's ``main``, before any module that imports Keras.

    Parameters
    ----------
    name : {"tensorflow", "jax", "torch"} or None
        ``--backend``; None: ``KERAS_BACKEND``, else "tensorflow" (:func:`resolve_backend`).

    Returns
    -------
    module
        The imported ``keras``, whose ``keras.backend.backend()`` is the chosen backend.

    Raises
    ------
    ValueError
        The backend is unknown, its package is not installed (the message names the pip
        command), or Keras was already imported in this process with another backend
        (Keras picks its backend once, at import).

    Notes
    -----
    Sets ``KERAS_BACKEND`` for this process (Keras reads it at import). With TensorFlow,
    environment defaults (an explicit setting wins): ``TF_ENABLE_ONEDNN_OPTS=1``, oneDNN
    kernels, which TensorFlow enables by itself only on AVX-512 CPUs although they train
    1.4-1.5x faster on AVX2 CPUs too (tests/benchmark.py --onednn off; only the float
    rounding order changes); ``TF_CPP_MIN_LOG_LEVEL=3``, no C++ log lines such as "Could not
    find cuda drivers" on a CPU machine. The lines TensorFlow writes while it loads, before
    its logging is set up, ignore that level: they are held back and shown only when the
    import fails or ``TF_CPP_MIN_LOG_LEVEL`` was set by the user. On JAX and PyTorch
    TensorFlow is not imported at all.
    """
    import importlib.util

    chosen = resolve_backend(name)
    flag = "--backend" if name else ("KERAS_BACKEND" if os.environ.get("KERAS_BACKEND")
                                     else "the default backend")
    if "keras" in sys.modules:
        loaded = sys.modules["keras"].backend.backend()
        if loaded != chosen:
            raise ValueError(f"{flag} {chosen}: Keras is already loaded in this process with "
                             f"the {loaded} backend (Keras picks its backend once, at import)"
                             ": set KERAS_BACKEND before Python starts")
        if chosen == "tensorflow":
            _threads.apply(threads, printer=lambda text: print(text, file=sys.stderr))
        return sys.modules["keras"]
    module, pip_name = BACKEND_PACKAGES[chosen]
    if importlib.util.find_spec(module) is None:
        raise ValueError(f"{flag} {chosen}: the package '{module}' is not installed: "
                         f"pip install {pip_name}, or choose another --backend")
    os.environ["KERAS_BACKEND"] = chosen
    if chosen != "tensorflow":
        import keras

        return keras
    user_level = "TF_CPP_MIN_LOG_LEVEL" in os.environ
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            import keras  # loads TensorFlow, its backend
            import tensorflow  # noqa: F401
        except BaseException:
            user_level = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if user_level:
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))
    _threads.apply(threads, printer=lambda text: print(text, file=sys.stderr))
    return keras


def set_random_seed(seed):
    """``keras.utils.set_random_seed(seed)`` (Python, numpy, Keras' seed; PyTorch's on that
    backend) without importing TensorFlow on the JAX and PyTorch backends.

    Keras also seeds TensorFlow whenever it is importable, which imports it (seconds, and
    hundreds of MB) in a JAX or PyTorch run on a machine where it happens to be installed.
    Keras' lazy TensorFlow handle is marked unavailable for that call only (a private Keras
    attribute: if it is gone, the call is Keras' own and TensorFlow may load).
    """
    import keras

    if keras.backend.backend() == "tensorflow" or "tensorflow" in sys.modules:
        keras.utils.set_random_seed(int(seed))
        return
    try:
        from keras.src.utils import module_utils

        lazy = module_utils.tensorflow
        saved = lazy._available
    except (ImportError, AttributeError):
        keras.utils.set_random_seed(int(seed))
        return
    lazy._available = False
    try:
        keras.utils.set_random_seed(int(seed))
    finally:
        lazy._available = saved


def load_tensorflow(*, threads=None):
    """The TensorFlow backend (:func:`load_backend` ``("tensorflow")``); returns the
    ``tensorflow`` module. Kept for callers that need TensorFlow itself."""
    load_backend("tensorflow", threads=threads)
    return sys.modules["tensorflow"]


class TrainingDiverged(RuntimeError):
    """A training loss became NaN or infinite: the run stops without a summary."""


def _os_error_message(err):
    """An OSError raised by the system (not one of ours, which carry their own message) as
    one line naming the path."""
    if err.filename is None or not err.strerror:
        return str(err)
    where = f"'{err.filename}'" + (f" -> '{err.filename2}'" if err.filename2 else "")
    return (f"{err.strerror}: {where}; check the flag that names this path (e.g. "
            "--results_dir, --dataset, --data_dir, --incv_results) and its permissions")


def cli(main, args):
    """Run a script's ``main(args)``; a bad input (ValueError, a missing, existing,
    unreadable or unwritable file or folder) or a diverged training ends with its one-line
    message on stderr and exit status 2 instead of a traceback.
    Set NOISY_LABELS_DEBUG=1 to see the traceback.

    A run stopped at a safe point by SIGTERM / SIGUSR1 (preemption.py) ends with a note and
    exit status 75 (preemption.EXIT_PREEMPTED), after asking SLURM to requeue the job when
    it runs under SLURM."""
    from . import preemption

    try:
        main(args)
    except preemption.Preempted as stop:
        print(f"stopped: {stop}; continue with --resume (the same flags)", file=sys.stderr)
        preemption.requeue_this_job(printer=lambda text: print(text, file=sys.stderr))
        return preemption.EXIT_PREEMPTED
    except (ValueError, OSError, TrainingDiverged) as err:
        if os.environ.get("NOISY_LABELS_DEBUG"):
            raise
        text = _os_error_message(err) if isinstance(err, OSError) else str(err)
        print(f"error: {' '.join(text.split())}", file=sys.stderr)
        return 2
    return 0


def check_writable_dir(path, flag="--results_dir"):
    """Raise ValueError unless ``path`` is, or can be created as, a folder we may write in
    (checked on its nearest existing ancestor; nothing is created)."""
    p = os.path.abspath(path)
    while not os.path.exists(p):
        p = os.path.dirname(p)
    if not os.path.isdir(p):
        where = "is a file" if p == os.path.abspath(path) else f"lies under the file '{p}'"
        raise ValueError(f"{flag} '{path}' {where}, not a folder: choose another {flag}")
    if not os.access(p, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} '{path}': no permission to write in '{p}': choose a "
                         f"{flag} you can write to")


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
        if os.path.isdir(out) and run_files(out) and not (overwrite or resume):
            prepare_run_dir(out)  # raises the explanatory FileExistsError
        todo.append(k)
    return todo, done
