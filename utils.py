"""Plumbing both scripts share: seeded random streams, run directories that never clobber
an earlier run, atomic JSON / npz / figure writes, the resolved run configuration, the
shared command-line flags and the error-reporting entry point.

Nothing here imports Keras or TensorFlow at module level (the scripts parse their flags
before TensorFlow loads), nothing runs at import, and nothing prints (callers pass a
``printer`` where progress should be shown).
"""

import contextlib
import json
import math
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
ARCHS = ("cnn", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
         "inception_resnet_v2")
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
        return _jsonable(obj.item())  # a numpy NaN / inf becomes null too
    if isinstance(obj, float) and not np.isfinite(obj):
        return None  # strict JSON has no NaN
    return obj


def write_json(path, obj):
    """Atomically write ``obj`` (numpy values allowed; NaN -> null) as indented JSON."""
    with atomic_write(path) as f:
        json.dump(_jsonable(obj), f, indent=2)
        f.write("\n")


def jsonl_line(row):
    """One strict-JSON line (numpy values allowed; NaN and infinities -> null), newline
    included: every JSON-lines writer goes through it, so a reader never meets ``NaN``."""
    return json.dumps(_jsonable(row), allow_nan=False) + "\n"


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
    Set NOISY_LABELS_DEBUG=1 to see the traceback."""
    try:
        main(args)
    except (ValueError, OSError, TrainingDiverged) as err:
        if os.environ.get("NOISY_LABELS_DEBUG"):
            raise
        text = _os_error_message(err) if isinstance(err, OSError) else str(err)
        print(f"error: {' '.join(text.split())}", file=sys.stderr)
        return 2
    return 0


def format_duration(seconds):
    """Seconds as a person reads them: '42s', '3m05s', '2h07m'."""
    s = int(round(max(0.0, float(seconds))))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Elapsed time and a linear estimate of what remains, over steps of similar length.

    ``mark(remaining)`` is called as each step starts, with the number of steps left
    including that one; the estimate is the mean length of the steps finished in this
    process times ``remaining`` (none before the first step has finished).
    """

    def __init__(self, clock=time.monotonic):
        self.clock, self.t0, self.finished = clock, None, 0

    def mark(self, remaining):
        now = self.clock()
        if self.t0 is None:
            self.t0 = now
        else:
            self.finished += 1
        elapsed = now - self.t0
        if not self.finished:
            return f"elapsed {format_duration(elapsed)}"
        left = elapsed / self.finished * remaining
        return f"elapsed {format_duration(elapsed)}, about {format_duration(left)} left"


def incv_run_line(tag, *, iterations, n_train, n_held, keep_best, progress):
    """The line printed as an INCV training run starts (``tag`` as incv_select names the
    runs, "iteration<k>-half<h>"), e.g. "INCV iteration 2/4, run 1/2: train on 812,
    predict 301 (best checkpoint); elapsed 3m05s, about 9m15s left"."""
    head, remaining = tag, 1
    if tag.startswith("iteration") and "-half" in tag:
        k, h = (int(x) for x in tag[len("iteration"):].split("-half"))
        head, remaining = (f"iteration {k}/{iterations}, run {h}/2",
                           2 * (iterations - k) + (2 - h) + 1)
    return (f"INCV {head}: train on {n_train}, predict {n_held}"
            f"{' (best checkpoint)' if keep_best else ''}; {progress.mark(remaining)}")


def _num(value, digits=3):
    return "n/a" if value is None else f"{value:.{digits}f}"


def incv_iteration_line(record, iterations):
    """One INCV iteration's record (incv.incv_select) as a line of formatted numbers."""
    text = (f"INCV iteration {record['iteration']}/{iterations} done: |S| {record['selected']}"
            f", |C| {record['candidates']}, removed {record['removed']}")
    if "label_precision" in record:
        text += (f"; LP {_num(record['label_precision'])}, "
                 f"LR {_num(record['label_recall'])} of S")
    return text


def done_line(summary, out):
    """The line closing an incv_train.py run: formatted numbers and the files to look at."""
    parts = [f"done in {format_duration(summary.get('seconds', 0))}"]
    if summary.get("estimated_noise_ratio") is not None:
        parts.append(f"estimated noise {summary['estimated_noise_ratio']:.3f} (actual "
                     f"{_num(summary.get('actual_noise_ratio'))})")
    sel = summary.get("selection")
    if sel:
        parts.append(f"selected {sel['selected']} of {summary.get('n_train')} (LP "
                     f"{_num(sel.get('label_precision'))}, LR {_num(sel.get('label_recall'))})")
    acc = summary.get("test_accuracy")
    if acc:
        parts.append("test accuracy " + ", ".join(
            f"{k} {v:.4f}" for k, v in acc.items() if v is not None))
    text = "; ".join(parts)
    cleaned = os.path.join(out, "cleaned_set.csv")
    if os.path.isfile(cleaned):
        text += f"\n  cleaned set: {cleaned}"
    return text


def add_run_arguments(parser, *, arch, arch_help, batch_help="training batch size"):
    """The flags both scripts share (data, noise, network, seeds, results, devices)."""
    import data  # here, not at the top: data and devices import utils
    import devices
    import noise

    p = parser
    p.add_argument("--dataset", type=str, default="cifar10",
                   help="cifar10, cifar100, digits (bundled with scikit-learn), a path to "
                        "an .npz with x_train, y_train (and/or y_train_noisy: labels as "
                        "given), x_test, y_test, or an image folder DIR with DIR/train/<class>/"
                        " and DIR/test/<class>/")
    p.add_argument("--image_size", type=int, default=32,
                   help="image folders: resize every image to this side (pixels)")
    p.add_argument("--labels", type=str, default=None,
                   help="image folders: CSV 'path,label' of the labels as given (path relative "
                        "to DIR/train, label a class name or index); folder names are then the "
                        "clean labels")
    p.add_argument("--folder_labels", type=str, default="clean", choices=("clean", "given"),
                   help="image folders: the class folders are the clean labels (synthetic "
                        "noise or --labels on top) or the labels as given (web / crowd labels, "
                        "e.g. WebVision; no clean labels)")
    p.add_argument("--transition_matrix", type=str, default=None,
                   help=".npy or .csv c x c matrix T (rows: true class, each a distribution): "
                        "draw the synthetic noise from T instead of --noise_pattern/"
                        "--noisy_ratio; runs are filed under T-<file stem>")
    p.add_argument("--noise_type", type=str, default="sym", choices=noise.PATTERNS,
                   help="labels as given or --transition_matrix: the noise type whose rules "
                        "INCV and Co-teaching follow (sym: large-loss removal, k_best by the "
                        "estimated ratio, e_S with k = c-1, warm-up 40 of 200 epochs (80 when "
                        "e > 0.6); asym: none, k_best 1, k = 1, warm-up 80)")
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
    """Reject flag values no run could use, through ``parser.error`` (exit status 2), and
    drop repeated values of the grid flags (with a note), before any data is loaded."""
    for e in args.noisy_ratio:
        if not 0.0 <= e <= 1.0:
            parser.error(f"--noisy_ratio must be in [0, 1], got {e}")
    for flag in positive:
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be a positive integer, got {getattr(args, flag)}")
    if args.n_train is not None and args.n_train < 4:
        parser.error(f"--n_train must be at least 4, got {args.n_train}")
    if args.image_size < 1:
        parser.error(f"--image_size must be a positive integer, got {args.image_size}")
    for flag in ("lr", "tk"):  # --tk: incv_train.py only
        value = getattr(args, flag, None)
        if value is not None and not (math.isfinite(value) and value > 0):
            parser.error(f"--{flag} must be a positive number, got {value}")
    for seed in args.seed:
        if seed < 0:
            parser.error(f"--seed must be a non-negative integer, got {seed}")
    try:
        dedupe_grid_flags(args, printer=lambda text: print(text, file=sys.stderr))
        check_writable_dir(args.results_dir)
    except ValueError as err:
        parser.error(str(err))


# Flags whose several values make a grid of runs: each value names one run directory.
GRID_FLAGS = {"noise_pattern": "pattern", "noisy_ratio": "ratio", "method": "method",
              "seed": "seed"}


def dedupe_grid_flags(args, *, printer=None):
    """Keep the first of repeated values of each grid flag (``--seed 0 0``, ``--noisy_ratio
    0.5 0.50``) so that a grid never runs into its own run directory; ``printer`` gets a
    note. Ratios that differ but share a directory name (``f"{r:g}"``) raise ValueError."""
    for flag in GRID_FLAGS:
        values = getattr(args, flag, None)
        if values is None:
            continue
        kept = {}
        for v in values:
            key = f"{v:g}" if isinstance(v, float) else v
            if key in kept and kept[key] != v:
                raise ValueError(f"--{flag} values {kept[key]!r} and {v!r} share the run "
                                 f"directory name '{key}': give values that differ in "
                                 "their first 6 significant digits")
            kept.setdefault(key, v)
        if len(kept) < len(values):
            if printer:
                printer(f"note: --{flag} repeats a value; each run is made once: "
                        + " ".join(f"{v:g}" if isinstance(v, float) else str(v)
                                   for v in kept.values()))
            setattr(args, flag, list(kept.values()))


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


# Flags that do not change what a run computes (where it is written, how it is shown, where
# the data files are, what to do with earlier runs): --resume does not compare them. Every
# other flag, including any added later, must equal the value in the run's config.json.
BOOKKEEPING_FLAGS = ("results_dir", "overwrite", "skip_existing", "resume", "verbose",
                     "devices", "data_dir", "no_download")


def resume_mismatches(args, run, config):
    """The flags in which a run to continue differs from its ``config.json``.

    Parameters
    ----------
    args : dict
        This call's flags (``vars(args)``).
    run : dict
        This run's grid values, e.g. ``{"method": "incv", "pattern": "sym", "ratio": 0.5,
        "seed": 0}``; compared with config.json's ``run`` (the grid flags' lists are not:
        a grid may be resumed one run at a time).
    config : dict
        The run's config.json.

    Returns
    -------
    list of (flag, value in config.json, value now)
    """
    old_args, old_run = config.get("args") or {}, config.get("run") or {}
    diffs = []
    for key, value in args.items():
        if key in BOOKKEEPING_FLAGS or key in GRID_FLAGS:
            continue
        if key not in old_args:
            if value not in (None, False):  # a flag newer than the run: only its default
                diffs.append((key, "(not recorded)", value))
        elif _jsonable(old_args[key]) != _jsonable(value):
            diffs.append((key, old_args[key], value))
    for flag, field in GRID_FLAGS.items():
        if field in run and old_run.get(field) != run[field]:
            diffs.append((flag, old_run.get(field), run[field]))
    # the --n_train subset is drawn with the first --seed (data.load_training_data)
    if args.get("n_train") is not None and old_args.get("seed") and args.get("seed") and \
            old_args["seed"][0] != args["seed"][0]:
        diffs.append(("seed (its first value draws the --n_train subset)",
                      old_args["seed"][0], args["seed"][0]))
    return diffs


def check_resume(args, runs):
    """``--resume``: refuse to continue a run made with other flags, or nothing at all.

    Parameters
    ----------
    args : argparse.Namespace
    runs : list of (run_dir, run dict)
        The grid of this call, ``run`` as recorded in config.json (see
        :func:`resume_mismatches`).

    Raises
    ------
    ValueError
        A run directory's config.json is unreadable or records other flags (all named,
        with both values).
    FileNotFoundError
        No run of the grid has been started (no config.json): nothing to resume.
    """
    if not getattr(args, "resume", False):
        return
    found = 0
    for out, run in runs:
        path = os.path.join(out, "config.json")
        if not os.path.isfile(path):
            continue
        found += 1
        try:
            config = read_json(path)
        except (OSError, ValueError) as err:
            raise ValueError(f"--resume: cannot read '{path}' ({err}): start this run anew "
                             "with --overwrite") from None
        if not isinstance(config, dict):
            raise ValueError(f"--resume: '{path}' is not a JSON object: start this run "
                             "anew with --overwrite")
        diffs = resume_mismatches(vars(args), run, config)
        if diffs:
            shown = "; ".join(f"--{k} {json.dumps(_jsonable(old))} there, "
                              f"{json.dumps(_jsonable(new))} now" for k, old, new in diffs)
            raise ValueError(f"--resume: the run in '{out}' was made with other flags ("
                             f"{shown}): resume it with the flags of its config.json, or "
                             "start it anew with --overwrite or another --results_dir")
    if not found:
        raise FileNotFoundError(
            f"--resume: nothing to resume: no run of this grid has started under "
            f"--results_dir '{args.results_dir}' (no config.json): check --results_dir and "
            "the flags, or leave out --resume to start the runs")


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


def noise_plan(args, data, printer):
    """The (pattern, ratio) settings of a call and the ``--transition_matrix`` (or None),
    after checking the data against the flags (before any run directory is made).

    Labels as given (an npz's y_train_noisy, an image folder's --labels) are used as they
    are: one setting "given", no synthetic noise; a matrix file gives one setting
    "T-<stem>"; otherwise every --noise_pattern x --noisy_ratio.
    """
    import noise

    given = data.y_train_noisy is not None
    if given and args.transition_matrix is not None:
        raise ValueError("--transition_matrix draws synthetic noise, but the dataset brings "
                         "its own noisy labels (y_train_noisy / --labels): drop one of them")
    if args.arch == "inception_resnet_v2" and min(data.input_shape[:2]) < 75:
        # checked here, before any run directory is made (models.build_model checks too)
        raise ValueError(f"--arch inception_resnet_v2 needs images of at least 75x75 pixels, "
                         f"{data.name} has {data.input_shape[0]}x{data.input_shape[1]}: use "
                         "an image folder --dataset with --image_size 75 or more (299 native)")
    T = None
    if args.transition_matrix is not None:
        T = noise.load_transition_matrix(args.transition_matrix, data.num_classes)
    if given or T is not None:
        printer(f"note: {'labels as given' if given else 'noise from ' + args.transition_matrix}"
                f": --noise_pattern/--noisy_ratio are not used; INCV and Co-teaching follow "
                f"the rules of --noise_type {args.noise_type}")
    return noise.noise_settings(patterns=args.noise_pattern, ratios=args.noisy_ratio,
                                transition_matrix=args.transition_matrix, given=given), T


def dataset_extras(data, out):
    """What a run records about its dataset beyond the flags: an image folder's class
    names (also written to ``out``/classes.json) and whether clean labels are known."""
    extras = {"clean_labels_known": bool(data.clean_known),
              "labels_as_given": data.y_train_noisy is not None}
    if data.class_names:
        write_json(os.path.join(out, "classes.json"), list(data.class_names))
        extras["class_names"] = list(data.class_names)
    return extras
