"""The runs a call expands to, their status, and the split of a grid into tasks.

A grid (``--noise_pattern`` x ``--noisy_ratio`` x ``--seed`` [x ``--method``]) is split into
*units*, one per (setting, seed), each holding that setting's and seed's runs in the order
one process runs them: work that reuses other work stays in one unit (``--method cl`` /
``ncv`` read the INCV run's out-of-sample probabilities of the same setting and seed, and
the figure of every method of a seed overlays them). ``--task K --num_tasks N`` runs units
K, K + N, K + 2N, ...; N = the number of units gives one unit per task (what
``slurm.py`` submits, one SLURM array task each). A grid run as N tasks makes the same runs,
files and numbers as the grid run in one process: each run seeds everything it draws from
its own ``--seed`` (tests/test_grid.py checks it).

Nothing here imports Keras or TensorFlow; nothing runs at import.
"""

import os

from . import locks

STATUSES = ("finished", "running", "started", "new")


def run_status(run_dir):
    """"finished" (summary.json), "running" (a live process holds its lock), "started"
    (files but no summary: a killed or preempted run, continued with --resume) or "new"."""
    if os.path.isfile(os.path.join(run_dir, "summary.json")):
        return "finished"
    if locks.lock_status(run_dir)[0] == "held":
        return "running"
    if os.path.isdir(run_dir) and any(not n.startswith(locks.LOCK_NAME)
                                      for n in os.listdir(run_dir)):
        return "started"
    return "new"


def unit_key(run):
    """The unit a run belongs to: its setting and seed."""
    return (run["pattern"], run["ratio"], run["seed"])


def units(runs):
    """The grid's units in order of first appearance: a list of lists of run indices."""
    order, groups = [], {}
    for i, run in enumerate(runs):
        key = unit_key(run)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(i)
    return [groups[k] for k in order]


def task_of_unit(unit, num_tasks):
    return unit % num_tasks


def select(runs, *, task=None, num_tasks=None):
    """Indices of the runs of task ``task`` of ``num_tasks`` (all runs when ``task`` is
    None), in the grid's order."""
    if task is None:
        return list(range(len(runs)))
    keep = set()
    for u, members in enumerate(units(runs)):
        if task_of_unit(u, num_tasks) == task:
            keep.update(members)
    return sorted(keep)


def listing(runs, *, task=None, num_tasks=None):
    """One row per run of the grid (or of the task): index, unit, task, setting, method,
    seed, run directory and status (see :func:`run_status`)."""
    unit_of = {i: u for u, members in enumerate(units(runs)) for i in members}
    n = num_tasks or len(units(runs))
    rows = []
    for i in select(runs, task=task, num_tasks=num_tasks):
        run = runs[i]
        setting = run["pattern"] if run["ratio"] is None else \
            f"{run['pattern']} e={run['ratio']:g}"
        rows.append({"index": i, "unit": unit_of[i], "task": task_of_unit(unit_of[i], n),
                     "setting": setting, "method": run.get("method", "-"),
                     "seed": run["seed"], "run_dir": run["run_dir"],
                     "status": run_status(run["run_dir"])})
    return rows


def format_listing(rows, *, num_units, num_tasks=None):
    """The ``--list_runs`` text: a header, one line per row, a count per status."""
    head = ("index", "unit", "task", "setting", "method", "seed", "status", "run_dir")
    table = [head] + [tuple(str(r[k]) for k in head) for r in rows]
    widths = [max(len(line[c]) for line in table) for c in range(len(head) - 1)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(line[:-1], widths)) + "  " + line[-1]
             for line in table]
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    split = (f"{num_tasks} tasks" if num_tasks else
             f"one task per unit: --num_tasks {num_units}")
    lines.append(f"{len(rows)} runs, {num_units} units (setting x seed; {split}): "
                 + ", ".join(f"{counts[s]} {s}" for s in STATUSES))
    return "\n".join(lines)


def resolve_task(args, *, environ=None, printer=None):
    """Fill ``args.task`` / ``args.num_tasks`` from ``SLURM_ARRAY_TASK_ID`` /
    ``SLURM_ARRAY_TASK_COUNT`` when ``--task`` is not given (a 0-based ``--array=0-(N-1)``),
    and check them. Raises ValueError naming the flag."""
    env = os.environ if environ is None else environ
    if args.task is None and env.get("SLURM_ARRAY_TASK_ID") not in (None, ""):
        try:
            args.task = int(env["SLURM_ARRAY_TASK_ID"])
            if args.num_tasks is None:
                args.num_tasks = int(env["SLURM_ARRAY_TASK_COUNT"])
        except (KeyError, ValueError):
            raise ValueError("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not "
                             "a number: pass --task K --num_tasks N explicitly") from None
        if printer:
            printer(f"note: SLURM array task {args.task} of {args.num_tasks} "
                    "(SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT): running that part of the "
                    "grid; pass --task 0 --num_tasks 1 to run all of it")
    if (args.task is None) != (args.num_tasks is None):
        raise ValueError("--task and --num_tasks go together: give both (--task K "
                         "--num_tasks N, 0 <= K < N), or neither to run the whole grid")
    if args.num_tasks is not None and args.num_tasks < 1:
        raise ValueError(f"--num_tasks must be a positive integer, got {args.num_tasks}")
    if args.task is not None and not 0 <= args.task < args.num_tasks:
        raise ValueError(f"--task must be in 0..{args.num_tasks - 1} (--num_tasks "
                         f"{args.num_tasks}), got {args.task}")


def is_task(args):
    """Whether this call runs one task of a split grid."""
    return getattr(args, "task", None) is not None


def plan_task(args, runs, printer):
    """The indices of this call's runs after ``--task`` / ``--num_tasks``; with
    ``--list_runs`` also prints the listing. ``runs``: dicts with pattern, ratio, seed,
    (method,) run_dir. Returns (indices, listing rows or None)."""
    selected = select(runs, task=args.task, num_tasks=args.num_tasks)
    n_units = len(units(runs))
    if is_task(args) and args.task >= n_units and printer:
        printer(f"note: task {args.task} of {args.num_tasks}: the grid has {n_units} units "
                "(setting x seed), none for this task: nothing to do")
    if not getattr(args, "list_runs", False):
        return selected, None
    rows = listing(runs, task=args.task, num_tasks=args.num_tasks)
    printer(format_listing(rows, num_units=n_units, num_tasks=args.num_tasks))
    return selected, rows
