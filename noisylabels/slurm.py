"""Submit a grid of noisy_cv.py or incv_train.py runs to SLURM as one job array.

One array task per unit of the grid (one setting x seed, its methods in order: grid.py);
tasks whose runs are all finished are not submitted, so re-submitting the same command
after failures, cancellations or a time limit runs only what is left. Each task runs the
script with the same flags plus ``--task K --num_tasks N --skip_existing --resume``: it
skips finished runs, continues started ones (the config check of ``--resume`` included)
and starts new ones. Preemption, ``scontrol requeue`` and the time limit (``--signal``,
sent ``--signal_seconds`` before it) stop the run after its current epoch with the
checkpoint written (preemption.py), and the task is requeued (``sbatch --requeue``) to
continue it. Per-task logs: ``<results_dir>/slurm/<time>-<script>/<job>_<task>.out``.

    python slurm.py --partition gpu --time 24:00:00 --gpus_per_task 1 --cpus_per_task 8 \\
        --mem 32G incv_train.py --dataset cifar10 --method incv coteaching standard \\
        --noise_pattern sym --noisy_ratio 0.2 0.5 0.8 --seed 0 1 2 3 4

Plain ``sbatch --array`` rather than a submission library: the run must stop at a safe point
of its own (the end of an epoch) when SLURM signals, and the task then exits by itself.
Without SLURM (no ``sbatch``), it says so and points to the one-machine way: the same
``--task K --num_tasks N``, one process per GPU (docs/cluster.md).
"""

import argparse
import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

from . import utils

SCRIPTS = {"noisy_cv.py": "noisy_cv", "incv_train.py": "incv_train"}
# Flags the launcher sets per task, or that would make re-submission unsafe.
_RESERVED = ("--task", "--num_tasks", "--list_runs", "--overwrite")
_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$|^\d+-\d+$")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        usage="%(prog)s [launcher flags] {noisy_cv.py,incv_train.py} [the script's flags]")
    p.add_argument("--partition", type=str, default=None,
                   help="SLURM partition (sbatch --partition); default: the cluster's")
    p.add_argument("--time", type=str, default=None,
                   help="time limit per task (sbatch --time: MM, HH:MM:SS, D-HH:MM); a run "
                        "cut by it stops at an epoch end and its task is requeued")
    p.add_argument("--gpus_per_task", type=int, default=0,
                   help="GPUs per task (sbatch --gres=gpu:N); 0 = none (CPU runs)")
    p.add_argument("--cpus_per_task", type=int, default=1, help="sbatch --cpus-per-task")
    p.add_argument("--mem", type=str, default=None,
                   help="memory per task (sbatch --mem, e.g. 16G); default: the cluster's")
    p.add_argument("--parallel", type=int, default=None,
                   help="at most this many tasks at a time (sbatch --array=...%%N)")
    p.add_argument("--signal_seconds", type=int, default=300,
                   help="ask SLURM for SIGUSR1 this many seconds before the time limit "
                        "(sbatch --signal=B:USR1@N): time to finish the epoch in progress")
    p.add_argument("--sbatch_option", type=str, action="append", default=[],
                   help="extra sbatch option, repeatable, e.g. --sbatch_option=--account=abc "
                        "--sbatch_option=--qos=long")
    p.add_argument("--job_name", type=str, default=None,
                   help="sbatch --job-name (default: the script and its dataset)")
    p.add_argument("--python", type=str, default=sys.executable,
                   help="the Python that runs the tasks (on the compute nodes)")
    p.add_argument("--dry_run", action="store_true",
                   help="write and print the job script, submit nothing")
    p.add_argument("script", type=str, choices=tuple(SCRIPTS),
                   help="the script whose grid is submitted")
    p.add_argument("script_args", nargs=argparse.REMAINDER,
                   help="its flags, as they are")
    args = p.parse_args(argv)
    for flag in ("cpus_per_task", "signal_seconds"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag} must be a positive integer, got {getattr(args, flag)}")
    if args.gpus_per_task < 0:
        p.error(f"--gpus_per_task must be 0 or more, got {args.gpus_per_task}")
    if args.parallel is not None and args.parallel < 1:
        p.error(f"--parallel must be a positive integer, got {args.parallel}")
    if args.time is not None and not _TIME.match(args.time):
        p.error(f"--time must be MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS (sbatch's "
                f"formats), got {args.time!r}")
    if args.mem is not None and not re.match(r"^\d+[KMGT]?$", args.mem):
        p.error(f"--mem must be a number with an optional unit K, M, G or T, got {args.mem!r}")
    for opt in args.sbatch_option:
        if not opt.startswith("-"):
            p.error(f"--sbatch_option must be an sbatch option such as --account=abc, got "
                    f"{opt!r} (write it with '=': --sbatch_option=--account=abc)")
    for flag in args.script_args:
        if flag.split("=")[0] in _RESERVED:
            p.error(f"{args.script} {flag.split('=')[0]}: the launcher sets --task / "
                    "--num_tasks per array task, and --overwrite would redo finished runs on "
                    "every re-submission: leave it out (start anew with another --results_dir)")
    return args


def _module(script):
    import importlib

    return importlib.import_module(f".{SCRIPTS[script]}", __package__)


def array_spec(indices, parallel=None):
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2,5,7-8"`` (+ ``"%N"``): sbatch --array's syntax."""
    parts, start = [], None
    for i, k in enumerate(indices):
        if start is None:
            start = k
        if i + 1 == len(indices) or indices[i + 1] != k + 1:
            parts.append(str(start) if start == k else f"{start}-{k}")
            start = None
    return ",".join(parts) + (f"%{parallel}" if parallel else "")


def grid_rows(script, script_args):
    """The script's ``--list_runs`` rows of the whole grid (its own output held back)."""
    module = _module(script)
    args = module.parse_args(list(script_args) + ["--list_runs", "--task", "0",
                                                  "--num_tasks", "1"])
    held = io.StringIO()
    with contextlib.redirect_stdout(held):
        rows = module.main(args)
    return args, rows


def job_script(args, *, array, num_units, log_dir, package_parent, cwd):
    """The sbatch script: one array task per unit, each running the script on its unit."""
    module = f"noisylabels.{SCRIPTS[args.script]}"
    opts = [f"--job-name={args.job_name}", f"--array={array}",
            f"--output={os.path.join(log_dir, '%A_%a.out')}", "--open-mode=append",
            "--requeue", f"--signal=B:USR1@{args.signal_seconds}", f"--chdir={cwd}",
            f"--cpus-per-task={args.cpus_per_task}"]
    if args.partition:
        opts.append(f"--partition={args.partition}")
    if args.time:
        opts.append(f"--time={args.time}")
    if args.mem:
        opts.append(f"--mem={args.mem}")
    if args.gpus_per_task:
        opts.append(f"--gres=gpu:{args.gpus_per_task}")
    opts += args.sbatch_option
    command = [args.python, "-m", module, *args.script_args, "--skip_existing", "--resume",
               "--task", '"$SLURM_ARRAY_TASK_ID"', "--num_tasks", str(num_units)]
    quoted = " ".join(c if c.startswith('"$') else shlex.quote(c) for c in command)
    return "\n".join([
        "#!/bin/bash",
        *(f"#SBATCH {o}" for o in opts),
        f"# written by: {' '.join(shlex.quote(a) for a in sys.argv)}",
        f"# one task per unit (setting x seed) of the grid; {num_units} units in all",
        f"export PYTHONPATH={shlex.quote(package_parent)}${{PYTHONPATH:+:$PYTHONPATH}}",
        "export PYTHONUNBUFFERED=1",
        'echo "== task $SLURM_ARRAY_TASK_ID (job ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID},'
        ' start $((${SLURM_RESTART_COUNT:-0} + 1))) on $(hostname) at $(date -u +%FT%TZ)"',
        "# exec: SLURM's signals (SIGTERM, SIGUSR1 before the time limit) reach the run",
        f"exec {quoted}", ""])


def main(args, printer=print):
    sbatch = shutil.which("sbatch")
    if sbatch is None and not args.dry_run:
        raise ValueError(
            f"SLURM's sbatch is not on PATH: this machine has no SLURM. On one machine with "
            f"several GPUs, run the grid's tasks yourself, one process per GPU: "
            f"CUDA_VISIBLE_DEVICES=K python {args.script} <flags> --task K --num_tasks N "
            f"(K = 0..N-1; see --list_runs and docs/cluster.md); or use --dry_run to see the "
            "job script")
    script_args, rows = grid_rows(args.script, args.script_args)
    units = sorted({r["unit"] for r in rows})
    busy = sorted({r["unit"] for r in rows if r["status"] == "running"})
    todo = [u for u in units if u not in busy and
            any(r["status"] != "finished" for r in rows if r["unit"] == u)]
    for u in busy:
        printer(f"note: unit {u} is running elsewhere (a live lock): not submitted; "
                "re-submit when it has stopped")
    finished = sum(r["status"] == "finished" for r in rows)
    if not todo:
        printer(f"nothing to submit: {finished} of {len(rows)} runs of the grid are "
                f"finished{', the rest running' if busy else ''} (--list_runs shows them)")
        return None
    if args.job_name is None:
        args.job_name = f"{args.script[:-3]}-{os.path.basename(str(script_args.dataset))}"
    cwd = os.getcwd()
    log_dir = os.path.abspath(os.path.join(
        script_args.results_dir, "slurm", f"{time.strftime('%Y%m%d-%H%M%S')}-{args.script[:-3]}"))
    while os.path.exists(log_dir):  # two submissions in one second: never share a folder
        log_dir += "x"
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = job_script(args, array=array_spec(todo, args.parallel), num_units=len(units),
                      log_dir=log_dir, package_parent=package_parent, cwd=cwd)
    os.makedirs(log_dir)
    path = os.path.join(log_dir, "job.sh")
    with utils.atomic_write(path) as f:
        f.write(text)
    n_runs = sum(r["unit"] in todo for r in rows if r["status"] != "finished")
    list_cmd = " ".join(["python", args.script, *map(shlex.quote, args.script_args),
                         "--list_runs"])
    if args.dry_run:
        printer(text)
        printer(f"dry run: {path} written, nothing submitted ({len(todo)} tasks, {n_runs} "
                "runs to do)")
        return None
    r = subprocess.run([sbatch, "--parsable", path], capture_output=True, text=True,
                       timeout=120)
    if r.returncode != 0:
        raise ValueError(f"sbatch refused the job ({(r.stderr or r.stdout).strip()}): check "
                         f"--partition, --time, --mem, --gpus_per_task and --sbatch_option; "
                         f"the job script is {path}")
    job = r.stdout.strip().split(";")[0]
    with utils.atomic_write(os.path.join(log_dir, "job_id")) as f:
        f.write(job + "\n")
    printer(f"submitted job {job}: {len(todo)} array tasks ({array_spec(todo)} of {len(units)} "
            f"units, {n_runs} runs to do, {finished} finished earlier)"
            + (f", at most {args.parallel} at a time" if args.parallel else ""))
    printer(f"logs:     {os.path.join(log_dir, job + '_<task>.out')}")
    printer(f"progress: squeue -j {job}   (sacct -j {job} once tasks end)")
    printer(f"runs:     {list_cmd}")
    printer("re-submit this same command after failures or cancellations: only unfinished "
            "runs are submitted")
    return job


def entry_point():
    """The console command (``pip install .``): parse, submit, exit with the status."""
    sys.exit(utils.cli(main, parse_args()))


if __name__ == "__main__":
    entry_point()
