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

from . import utils

# The networks of models.MODEL_NAMES, as a literal so that --help needs no TensorFlow
# (tests check the two agree).
ARCHS = ("cnn", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
         "inception_resnet_v2")


PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def add_run_arguments(parser, *, arch, arch_help, batch_help="training batch size"):
    """The flags both scripts share (data, noise, network, seeds, results, devices)."""
    from . import devices, noise, pipelines

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
    p.add_argument("--devices", type=str, default="default", choices=devices.DEVICES,
                   help=devices.DEVICES_HELP)
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                   help="Keras progress: 0 silent, 1 progress bar, 2 one line per epoch")
    p.add_argument("--precision", type=str, default="float32", choices=PRECISIONS,
                   help="Keras dtype policy: float32 (the paper's numerics); mixed_bfloat16 "
                        "for CPUs with AVX-512 BF16 / AMX (and recent GPUs); mixed_float16 "
                        "for GPU tensor cores (with loss scaling). Softmax outputs and losses "
                        "stay float32 (see README, Speed)")
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
        elif utils.jsonable(old_args[key]) != utils.jsonable(value):
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
            config = utils.read_json(path)
        except (OSError, ValueError) as err:
            raise ValueError(f"--resume: cannot read '{path}' ({err}): start this run anew "
                             "with --overwrite") from None
        if not isinstance(config, dict):
            raise ValueError(f"--resume: '{path}' is not a JSON object: start this run "
                             "anew with --overwrite")
        diffs = resume_mismatches(vars(args), run, config)
        if diffs:
            shown = "; ".join(f"--{k} {json.dumps(utils.jsonable(old))} there, "
                              f"{json.dumps(utils.jsonable(new))} now" for k, old, new in diffs)
            raise ValueError(f"--resume: the run in '{out}' was made with other flags ("
                             f"{shown}): resume it with the flags of its config.json, or "
                             "start it anew with --overwrite or another --results_dir")
    if not found:
        raise FileNotFoundError(
            f"--resume: nothing to resume: no run of this grid has started under "
            f"--results_dir '{args.results_dir}' (no config.json): check --results_dir and "
            "the flags, or leave out --resume to start the runs")


def noise_plan(args, data, printer):
    """The (pattern, ratio) settings of a call and the ``--transition_matrix`` (or None),
    after checking the data against the flags (before any run directory is made).

    Labels as given (an npz's y_train_noisy, an image folder's --labels) are used as they
    are: one setting "given", no synthetic noise; a matrix file gives one setting
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
                                transition_matrix=args.transition_matrix, given=given), T


def dataset_extras(data, out):
    """What a run records about its dataset beyond the flags: an image folder's class
    names (also written to ``out``/classes.json) and whether clean labels are known."""
    extras = {"clean_labels_known": bool(data.clean_known),
              "labels_as_given": data.y_train_noisy is not None}
    if data.class_names:
        utils.write_json(os.path.join(out, "classes.json"), list(data.class_names))
        extras["class_names"] = list(data.class_names)
    return extras
