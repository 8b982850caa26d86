"""TensorFlow's thread settings: how many cores this process may use, the settings chosen
from that count (``--intra_op_threads``, ``--inter_op_threads``), and applying them before
TensorFlow creates its thread pools.

Why the flags, and why the default is TensorFlow's own (docs/threads.md has the sweep and
the profile): on 2-core machines training keeps only ~1.1-1.8 of the cores busy, and
changing the pools was the lever tried. Measured side by side on an idle machine, no
setting beat TensorFlow's defaults (an intra-op and an inter-op pool of one thread per
schedulable CPU), so the default keeps them; the flags choose others.

Nothing here imports TensorFlow at module level, and importing this module changes nothing
in the process: :func:`apply` is called by ``utils.load_tensorflow`` in a script's ``main``.
"""

import math
import os

# Flag value meaning "TensorFlow's own default" (its tf.config.threading API uses 0 so).
TF_DEFAULT = 0


def available_cores(*, affinity=None, cgroup_root="/sys/fs/cgroup"):
    """The number of cores this process may keep busy: the CPUs it may run on
    (``os.sched_getaffinity``), capped by a cgroup CPU quota (a container's ``--cpus``).

    Parameters
    ----------
    affinity : set of int, optional
        The CPUs the process may run on; default ``os.sched_getaffinity(0)`` (or
        ``os.cpu_count()`` where that does not exist).
    cgroup_root : str
        Where the cgroup file system is mounted; v2's ``cpu.max`` ("quota period" or
        "max period") and v1's ``cpu/cpu.cfs_quota_us`` + ``cpu.cfs_period_us`` are read.

    Returns
    -------
    int
        At least 1. A fractional quota (1.5 CPUs) rounds up: the threads then share the
        quota's time, and one thread fewer would leave part of it unused.
    """
    if affinity is None:
        try:
            affinity = os.sched_getaffinity(0)
        except AttributeError:  # not on Linux
            affinity = range(os.cpu_count() or 1)
    cores = max(1, len(affinity))
    quota = cgroup_quota(cgroup_root)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return cores


def _read(path):
    try:
        with open(path) as f:
            return f.read().split()
    except OSError:
        return None


def cgroup_quota(cgroup_root="/sys/fs/cgroup"):
    """The cgroup CPU quota in CPUs (e.g. 1.5), or None when there is none (or no cgroup
    file system to read)."""
    v2 = _read(os.path.join(cgroup_root, "cpu.max"))
    if v2 and len(v2) == 2:
        if v2[0] == "max":
            return None
        try:
            quota, period = int(v2[0]), int(v2[1])
        except ValueError:
            return None
        return quota / period if quota > 0 and period > 0 else None
    quota = _read(os.path.join(cgroup_root, "cpu", "cpu.cfs_quota_us"))
    period = _read(os.path.join(cgroup_root, "cpu", "cpu.cfs_period_us"))
    try:
        quota, period = int(quota[0]), int(period[0])
    except (TypeError, ValueError, IndexError):
        return None
    return quota / period if quota > 0 and period > 0 else None  # -1: no quota


def choose_threads(cores, *, intra_op=None, inter_op=None):
    """The thread settings for a machine with ``cores`` usable cores.

    Parameters
    ----------
    cores : int
        Usable cores (:func:`available_cores`), at least 1.
    intra_op, inter_op : int or None, keyword-only
        The flags ``--intra_op_threads`` / ``--inter_op_threads``: None chooses from
        ``cores``; 0 keeps TensorFlow's own default; a positive number is used as is.

    Returns
    -------
    dict
        ``{"intra_op": int, "inter_op": int, "cores": int, "chosen": [names chosen here]}``;
        0 means TensorFlow's default (``cores`` threads for either pool).

    Notes
    -----
    The choice is TensorFlow's own defaults (0, 0: an intra-op and an inter-op pool of one
    thread per schedulable CPU each). Measured side by side on an idle 2-core AMD EPYC
    (docs/threads.md, ``tests/benchmark.py --sweep``), no other setting was faster on any
    training path at the median of 5 rounds: one inter-op thread with an intra-op pool of
    all the cores (2, 1) ran one network at 0.57x, INCV's pair at 0.54x and Co-teaching at
    0.50x of the defaults. Which is why ``cores`` is taken (and recorded) but, for now, does
    not change the result: this is the one place to change when a machine's sweep says
    otherwise.
    """
    if not isinstance(cores, int) or isinstance(cores, bool) or cores < 1:
        raise ValueError(f"cores must be a positive integer, got {cores!r}")
    chosen = []
    for name, value in (("intra_op", intra_op), ("inter_op", inter_op)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 0):
            raise ValueError(f"--{name}_threads must be a non-negative integer (0: "
                             f"TensorFlow's default), got {value!r}")
    if intra_op is None:
        intra_op = TF_DEFAULT
        chosen.append("intra_op")
    if inter_op is None:
        inter_op = TF_DEFAULT
        chosen.append("inter_op")
    return {"intra_op": intra_op, "inter_op": inter_op, "cores": cores, "chosen": chosen}


def settings_from_args(args, *, cores=None):
    """:func:`choose_threads` for a script's parsed flags (``args.intra_op_threads``,
    ``args.inter_op_threads``) on this machine (``cores``: default :func:`available_cores`)."""
    return choose_threads(available_cores() if cores is None else cores,
                          intra_op=getattr(args, "intra_op_threads", None),
                          inter_op=getattr(args, "inter_op_threads", None))


def effective():
    """The settings TensorFlow runs with now, ``{"intra_op": int, "inter_op": int}`` (0:
    its own default). Imports TensorFlow."""
    import tensorflow as tf

    return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}


def apply(settings, *, printer=None):
    """Give TensorFlow the thread ``settings`` (a :func:`choose_threads` dict, or None to
    leave its defaults) and return the settings in effect (:func:`effective`).

    Done with ``tf.config.threading`` rather than TF_NUM_INTRAOP_THREADS /
    TF_NUM_INTEROP_THREADS: the environment is read once, when TensorFlow first builds its
    pools, and silently ignored after that, whereas the API either takes effect or raises,
    and can be read back. Both must come before TensorFlow runs its first op. When it
    already has (a second ``main`` in one process, e.g. in tests, after TensorFlow ran with
    other settings) nothing can change: ``printer`` gets a note, and the settings in effect
    are returned (and recorded by the caller) instead of the ones asked for.
    """
    import tensorflow as tf

    now = effective()
    if settings is None:
        return now
    wanted = {k: settings[k] for k in ("intra_op", "inter_op")}
    if now == wanted:
        return now
    try:
        tf.config.threading.set_intra_op_parallelism_threads(wanted["intra_op"])
        tf.config.threading.set_inter_op_parallelism_threads(wanted["inter_op"])
    except RuntimeError:  # "cannot be modified after initialization"
        now = effective()
        if printer:
            printer(f"note: TensorFlow already runs with intra-op {now['intra_op']}, inter-op "
                    f"{now['inter_op']} threads (0: its default) in this process; "
                    f"--intra_op_threads {wanted['intra_op']} --inter_op_threads "
                    f"{wanted['inter_op']} cannot take effect")
        return now
    return effective()


def record(settings, in_effect):
    """What config.json records: the settings in effect (what results depend on) and how
    they were chosen."""
    return {"intra_op": in_effect["intra_op"], "inter_op": in_effect["inter_op"],
            "cores": settings["cores"] if settings else None,
            "chosen_from_cores": list(settings["chosen"]) if settings else []}


def add_arguments(parser):
    """``--intra_op_threads`` and ``--inter_op_threads`` (both scripts)."""
    parser.add_argument("--intra_op_threads", type=int, default=None,
                        help="TensorFlow intra-op threads (one op's parallel loop); default "
                             "and 0: TensorFlow's own (one per schedulable CPU), the fastest "
                             "measured (docs/threads.md). Recorded in config.json; a "
                             "--resume must run with the same")
    parser.add_argument("--inter_op_threads", type=int, default=None,
                        help="TensorFlow inter-op threads (independent ops side by side); "
                             "default and 0: TensorFlow's own (see --intra_op_threads)")


def check_arguments(parser, args):
    """Reject negative thread counts through ``parser.error`` (exit status 2)."""
    for flag in ("intra_op_threads", "inter_op_threads"):
        value = getattr(args, flag, None)
        if value is not None and value < 0:
            parser.error(f"--{flag} must be a non-negative integer (0: TensorFlow's "
                         f"default), got {value}")


def resume_mismatch(recorded, in_effect):
    """``--resume``: the (old, new) thread settings when a run's config.json records other
    ones than this call runs with, else None.

    Thread counts change how TensorFlow splits its sums (hence the float rounding), so a
    continued run keeps its settings; the flags themselves are bookkeeping (``None`` on one
    machine and an explicit 2 give the same run). A run recorded before threads were
    recorded ran with TensorFlow's defaults (0, 0).
    """
    old = {"intra_op": TF_DEFAULT, "inter_op": TF_DEFAULT}
    if isinstance(recorded, dict):
        old = {k: recorded.get(k) for k in old}
    new = {k: in_effect[k] for k in old}
    return None if old == new else (old, new)
