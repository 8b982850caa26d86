"""The command-line flags both scripts share, their checks (before any run directory is
made), the grid a call runs (deduplicated) and the comparison of a ``--resume`` with the run
it continues.

Nothing here imports Keras or TensorFlow at module level: the scripts parse their flags
(and print ``--help``) before TensorFlow loads.
"""

import json
import math
import os
import sys

from . import cifar_n, grid, utils
from . import threads as thread_settings

# The networks of models.MODEL_NAMES, as a literal so that --help needs no TensorFlow
# (tests check the two agree).
ARCHS = ("cnn", "cnn_x2", "cnn_x4", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
         "inception_resnet_v2")


PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def add_run_arguments(parser, *, arch, arch_help, batch_help="training batch size"):
    """The flags both scripts share (data, noise, network, seeds, results, devices)."""
    from . import devices, noise, pipelines

    p = parser
    p.add_argument("--dataset", type=str, default="cifar10",
                   help="cifar10, cifar100, cifar10n / cifar100n (those images with the "
                        "CIFAR-N human labels: the label file CIFAR-10_human.pt / "
                        "CIFAR-100_human.pt in --data_dir, see --label_set), digits "
                        "(bundled with scikit-learn), a path to "
                        "an .npz with x_train, y_train (and/or y_train_noisy: labels as "
                        "given), x_test, y_test, or an image folder DIR with DIR/train/<class>/"
                        " and DIR/test/<class>/")
    p.add_argument("--label_set", type=str, default=None, choices=cifar_n.ALL_LABEL_SETS,
                   help="cifar10n / cifar100n: the human label set (cifar10n: "
                        + ", ".join(cifar_n.LABEL_SETS["cifar10n"]) + "; cifar100n: "
                        + ", ".join(cifar_n.LABEL_SETS["cifar100n"]) + "); default the "
                        "noisiest (worse / noisy). Runs are filed under its name")
    p.add_argument("--image_size", type=int, default=32,
                   help="image side in pixels: image folders are resized to it; CIFAR's 32x32 "
                        "images are downsampled to a divisor of 32 (16, 8) by averaging "
                        "blocks of pixels, a cheaper CPU scale")
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
                   help="folder holding cifar-10-batches-py / cifar-100-python (and the "
                        "CIFAR-N label files)")
    p.add_argument("--no_download", action="store_true",
                   help="never try Keras' CIFAR download when the files are not in --data_dir")
    p.add_argument("--noise_pattern", type=str, nargs="+", default=["sym"],
                   choices=noise.PATTERNS, help="noise pattern(s); each is run")
    p.add_argument("--noisy_ratio", "--noise_ratio", dest="noisy_ratio", type=float,
                   nargs="+", default=[0.5], help="noise ratio(s) e in [0, 1]; each is run")
    p.add_argument("--arch", type=str, default=arch, choices=ARCHS, help=arch_help)
    p.add_argument("--batch_size", type=int, default=128, help=batch_help)
    p.add_argument("--lr", type=float, default=1e-3, help="initial Adam learning rate")
    p.add_argument("--augment", type=str, default="auto", choices=pipelines.AUGMENTATIONS,
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
    p.add_argument("--list_runs", action="store_true",
                   help="print the runs this call expands to (index, unit, task, setting, "
                        "method, seed, status finished / running / started / new, run "
                        "directory) and exit; nothing is trained or written")
    p.add_argument("--task", type=int, default=None,
                   help="run only task K of --num_tasks (units of one setting x seed, "
                        "K, K+N, ...); default: SLURM_ARRAY_TASK_ID when set, else the "
                        "whole grid")
    p.add_argument("--num_tasks", type=int, default=None,
                   help="the number of tasks the grid is split into (with --task); default: "
                        "SLURM_ARRAY_TASK_COUNT when SLURM_ARRAY_TASK_ID is set")
    p.add_argument("--devices", type=str, default="default", choices=devices.DEVICES,
                   help=devices.DEVICES_HELP)
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                   help="Keras progress: 0 silent, 1 progress bar, 2 one line per epoch")
    p.add_argument("--precision", type=str, default="float32", choices=PRECISIONS,
                   help="Keras dtype policy: float32 (the paper's numerics); mixed_bfloat16 "
                        "for CPUs with AVX-512 BF16 / AMX (and recent GPUs); mixed_float16 "
                        "for GPU tensor cores (with loss scaling). Softmax outputs and losses "
                        "stay float32 (docs/speed.md)")
    thread_settings.add_arguments(p)  # --intra_op_threads, --inter_op_threads
    add_backend_argument(p)


# --- Keras backend (--backend): see docs/backends.md -------------------------------------
BACKEND_HELP = (
    "Keras 3 backend: tensorflow (the default, fastest on CPUs), jax or torch (for GPUs, or "
    "where JAX / PyTorch is what is installed; TensorFlow is then not imported). Default: "
    "the KERAS_BACKEND environment variable, else tensorflow. On jax and torch, --devices "
    "all (tf.distribute) and --selection authors are refused (see docs/backends.md)")


def add_backend_argument(parser):
    """``--backend {tensorflow,jax,torch}`` (default None: ``KERAS_BACKEND`` or
    tensorflow); :func:`utils.load_backend` applies it before Keras loads."""
    parser.add_argument("--backend", type=str, default=None, choices=utils.BACKENDS,
                        help=BACKEND_HELP)


def check_backend_arguments(parser, args):
    """Refuse, through ``parser.error`` (exit status 2, before anything is written), an
    unknown ``KERAS_BACKEND``, a backend whose package is missing, and what the chosen
    backend cannot run: ``--devices all`` (tf.distribute) and ``--selection authors``
    (a data-dependent pick size in a compiled step) need TensorFlow."""
    import importlib.util

    try:
        backend = utils.resolve_backend(args.backend)
    except ValueError as err:
        parser.error(str(err))
    module, pip_name = utils.BACKEND_PACKAGES[backend]
    if importlib.util.find_spec(module) is None:
        parser.error(f"--backend {backend}: the package '{module}' is not installed: "
                     f"pip install {pip_name}, or choose another --backend")
    if backend == "tensorflow":
        return
    if getattr(args, "devices", "default") == "all":
        parser.error(f"--devices all is tf.distribute (TensorFlow only), not available on "
                     f"--backend {backend}: use --devices default (one device; choose it with "
                     "CUDA_VISIBLE_DEVICES), or --backend tensorflow")
    if getattr(args, "selection", "fused") == "authors":
        parser.error(f"--selection authors is available on --backend tensorflow only (its "
                     f"picked-subset passes have a data-dependent size), not on {backend}: "
                     "use --selection fused, or --backend tensorflow")
# --- end of --backend ----------------------------------------------------------------------


def start_framework(args):
    """A script's first step after parsing: TensorFlow's thread settings chosen before its
    pools exist, the ``--backend`` loaded, the ``--precision`` policy set. Returns what
    config.json records of the threads (None on JAX / PyTorch, which have no such pools)."""
    choice = thread_settings.settings_from_args(args)
    utils.load_backend(args.backend, threads=choice)
    record = (thread_settings.record(choice, thread_settings.effective())
              if utils.resolve_backend(args.backend) == "tensorflow" else None)
    set_precision(args.precision)
    return record


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
    thread_settings.check_arguments(parser, args)
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
    if args.label_set is not None:
        if args.dataset not in cifar_n.DATASETS:
            parser.error(f"--label_set is for --dataset {' / '.join(cifar_n.DATASETS)}, not "
                         f"'{args.dataset}': drop it")
        try:
            cifar_n.check_label_set(args.dataset, args.label_set)
        except ValueError as err:
            parser.error(str(err))
    for seed in args.seed:
        if seed < 0:
            parser.error(f"--seed must be a non-negative integer, got {seed}")
    if getattr(args, "overwrite", False) and getattr(args, "resume", False):
        parser.error("--overwrite and --resume contradict each other: choose one")
    try:
        dedupe_grid_flags(args, printer=lambda text: print(text, file=sys.stderr))
        grid.resolve_task(args, printer=lambda text: print(text, file=sys.stderr))
        if args.list_runs:
            return  # writes nothing: --results_dir need not be writable
        utils.check_writable_dir(args.results_dir)
    except ValueError as err:
        parser.error(str(err))


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


# The thread flags are bookkeeping: what a run depends on is the settings they resolve to
# on the machine at hand, compared on their own (config.json's "threads", see
# resume_mismatches).
BOOKKEEPING_FLAGS = ("results_dir", "overwrite", "skip_existing", "resume", "verbose",
                     "devices", "data_dir", "no_download", "intra_op_threads",
                     "inter_op_threads") + utils.NOT_RECORDED


def resume_mismatches(args, run, config, *, threads=None):
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
    threads : dict, optional
        The TensorFlow thread settings this call runs with (``threads.effective()``),
        compared with config.json's ``threads`` (a run recorded without them ran with
        TensorFlow's defaults); None: not compared.

    Returns
    -------
    list of (flag, value in config.json, value now)
    """
    from . import algorithms  # numpy only

    old_args, old_run = config.get("args") or {}, config.get("run") or {}
    # Table 1's methods' own flags: (owner, default)
    owned = {spec[0]: (method, spec[2]) for method, specs in algorithms.FLAGS.items()
             for spec in specs}
    diffs = []
    for key, value in args.items():
        if key in BOOKKEEPING_FLAGS or key in GRID_FLAGS:
            continue
        if key in owned:
            method, default = owned[key]
            if run.get("method") is not None and run["method"] != method:
                continue  # another method's flag cannot change this run
            if key not in old_args and value == default:
                continue  # newer than the run, at the default the run ran with
        if key not in old_args:
            if value not in (None, False):  # a flag newer than the run: only its default
                diffs.append((key, "(not recorded)", value))
        elif utils.jsonable(old_args[key]) != utils.jsonable(value):
            diffs.append((key, old_args[key], value))
    for flag, field in GRID_FLAGS.items():
        if field in run and old_run.get(field) != run[field]:
            diffs.append((flag, old_run.get(field), run[field]))
    # the --n_train subset is drawn with the first --seed (load_training_data)
    if args.get("n_train") is not None and old_args.get("seed") and args.get("seed") and \
            old_args["seed"][0] != args["seed"][0]:
        diffs.append(("seed (its first value draws the --n_train subset)",
                      old_args["seed"][0], args["seed"][0]))
    if threads is not None:
        mismatch = thread_settings.resume_mismatch(config.get("threads"), threads)
        if mismatch:
            old, new = mismatch
            what = ("intra_op_threads/--inter_op_threads (TensorFlow's thread settings "
                    "change the float rounding order; 0: its default)")
            diffs.append((what, [old["intra_op"], old["inter_op"]],
                          [new["intra_op"], new["inter_op"]]))
    return diffs


def check_resume(args, runs, *, threads=None, allow_none=False):
    """``--resume``: refuse to continue a run made with other flags, or nothing at all.

    Parameters
    ----------
    args : argparse.Namespace
    runs : list of (run_dir, run dict)
        The grid of this call, ``run`` as recorded in config.json (see
        :func:`resume_mismatches`).
    threads : dict, optional
        The thread settings in effect (see :func:`resume_mismatches`).

    Raises
    ------
    ValueError
        A run directory's config.json is unreadable or records other flags (all named,
        with both values).
    FileNotFoundError
        No run of the grid has been started (no config.json): nothing to resume; unless
        ``allow_none`` (one task of a split grid: its runs may all be new).
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
            config = utils.read_json(path)
        except (OSError, ValueError) as err:
            raise ValueError(f"--resume: cannot read '{path}' ({err}): start this run anew "
                             "with --overwrite") from None
        if not isinstance(config, dict):
            raise ValueError(f"--resume: '{path}' is not a JSON object: start this run "
                             "anew with --overwrite")
        diffs = resume_mismatches(vars(args), run, config, threads=threads)
        if diffs:
            shown = "; ".join(f"--{k} {json.dumps(utils.jsonable(old))} there, "
                              f"{json.dumps(utils.jsonable(new))} now" for k, old, new in diffs)
            raise ValueError(f"--resume: the run in '{out}' was made with other flags ("
                             f"{shown}): resume it with the flags of its config.json, or "
                             "start it anew with --overwrite or another --results_dir")
    if not found and not allow_none:
        raise FileNotFoundError(
            f"--resume: nothing to resume: no run of this grid has started under "
            f"--results_dir '{args.results_dir}' (no config.json): check --results_dir and "
            "the flags, or leave out --resume to start the runs")


def load_training_data(args, printer):
    """The dataset of ``--dataset``, its training part cut to the ``--n_train`` subset
    (drawn with the first ``--seed``, for every seed)."""
    from . import data as datasets

    data = datasets.load_dataset(args.dataset, data_dir=args.data_dir,
                                 download=not args.no_download, image_size=args.image_size,
                                 labels=args.labels, folder_labels=args.folder_labels,
                                 label_set=args.label_set)
    datasets.subset_training(data, args.n_train, seed=args.seed[0], printer=printer)
    if args.n_train is not None and len(args.seed) > 1:
        printer("note: the --n_train subset is drawn with the first seed for every seed")
    return data


def config_from(cls, args, **names):
    """A library settings dataclass ``cls`` (e.g. ``incv.INCVConfig``) from the parsed
    flags: each field takes the flag of its own name, or the flag ``names[field]``."""
    import dataclasses

    return cls(**{f.name: getattr(args, names.get(f.name, f.name))
                  for f in dataclasses.fields(cls)})


def noise_plan(args, data, printer):
    """The (pattern, ratio) settings of a call and the ``--transition_matrix`` (or None),
    after checking the data against the flags (before any run directory is made).

    Labels as given (an npz's y_train_noisy, an image folder's --labels) are used as they
    are: one setting "given" (CIFAR-N: the label set's name, e.g. "worse"), no synthetic
    noise; a matrix file gives one setting
    "T-<stem>"; otherwise every --noise_pattern x --noisy_ratio.
    """
    from . import noise

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
                                transition_matrix=args.transition_matrix, given=given,
                                given_name=data.label_set or noise.GIVEN), T


def dataset_extras(data, out):
    """What a run records about its dataset beyond the flags: an image folder's class
    names (also written to ``out``/classes.json) and whether clean labels are known."""
    extras = {"clean_labels_known": bool(data.clean_known),
              "labels_as_given": data.y_train_noisy is not None}
    if data.class_names:
        utils.write_json(os.path.join(out, "classes.json"), list(data.class_names))
        extras["class_names"] = list(data.class_names)
    return extras
