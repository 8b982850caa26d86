"""Stopping a run at a safe point when the scheduler asks (preemption, time limit).

SLURM sends SIGTERM before it kills a job (preemption, ``scontrol requeue``, the time
limit) and, with ``sbatch --signal=B:USR1@<seconds>``, SIGUSR1 that long before the time
limit. :func:`install` makes both signals only *request* a stop; the training loops call
:func:`check` at their safe points (after an epoch's checkpoint and log line are written),
which raises :class:`Preempted` there. The scripts then exit with :data:`EXIT_PREEMPTED`,
and a SLURM task asks to be requeued (:func:`requeue_this_job`); the requeued task continues
the run with ``--resume`` semantics.

Nothing here imports Keras or TensorFlow; nothing runs at import (signal handlers are
installed only by :func:`install`, which the scripts call from ``main``).
"""

import contextlib
import os
import signal
import subprocess
import threading

# EX_TEMPFAIL (sysexits.h): "try again later": the run stopped cleanly and can be continued.
EXIT_PREEMPTED = 75
SIGNALS = ("SIGTERM", "SIGUSR1")

_requested = threading.Event()
_received = []


class Preempted(BaseException):
    """A stop was requested by a signal; raised at a safe point. A BaseException, so that
    no ``except Exception`` on the way mistakes it for a failure of the run."""


def _handler(signum, frame):
    _received.append(signal.Signals(signum).name)
    _requested.set()


def install():
    """Make SIGTERM and SIGUSR1 request a stop at the next safe point (main thread only).
    Returns the previous handlers, for :func:`uninstall`."""
    previous = {}
    for name in SIGNALS:
        sig = getattr(signal, name)
        previous[sig] = signal.signal(sig, _handler)
    return previous


def uninstall(previous):
    for sig, handler in previous.items():
        signal.signal(sig, handler)


@contextlib.contextmanager
def installed():
    """:func:`install` for the duration of a ``with`` block (a run loop), then the previous
    handlers again; a no-op outside the main thread, where Python cannot set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reset()
    previous = install()
    try:
        yield
    finally:
        uninstall(previous)


def requested():
    return _requested.is_set()


def reset():
    """Forget a request (tests; a process that continues after a stop)."""
    _requested.clear()
    _received.clear()


def check(where=""):
    """Raise :class:`Preempted` if a stop was requested; call only where the run's
    checkpoint and logs are consistent."""
    if _requested.is_set():
        sig = _received[-1] if _received else "a signal"
        raise Preempted(f"{sig} received: stopped{where}")


def requeue_this_job(printer=None):
    """Ask SLURM to requeue this array task / job (``scontrol requeue``) when running under
    SLURM; a no-op elsewhere. Needed when the stop came early (``--signal``): on preemption
    or ``scontrol requeue`` SLURM requeues the job itself (then this request is refused,
    harmlessly). Returns True when scontrol accepted it."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return False
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    try:
        r = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True,
                           timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        if printer:
            printer(f"note: could not requeue SLURM job {job}: {err}")
        return False
    if printer:
        printer(f"note: asked SLURM to requeue job {job}" if r.returncode == 0 else
                f"note: SLURM did not requeue job {job} ({(r.stderr or r.stdout).strip()}): "
                "it is being requeued or cancelled already")
    return r.returncode == 0
