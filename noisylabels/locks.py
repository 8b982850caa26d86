"""Run-directory locks: one process trains into a run directory at a time.

A lock is the file ``<run_dir>/.lock``, created with ``O_CREAT | O_EXCL`` (atomic on local
file systems and on the NFS / Lustre / GPFS mounts clusters share between nodes), holding
the holder's host, pid, SLURM job id and a random token. While the lock is held a daemon
thread touches the file every ``heartbeat`` seconds. Another process that finds the lock:

- refuses the run with :class:`RunLocked` (a ``FileExistsError``: the scripts' one-line
  ``error: ...``, exit status 2) naming the holder, while the holder lives;
- takes the lock over, with a printed note, when the holder is dead: on the same host its
  pid no longer exists, on another host (where pids mean nothing) its heartbeat stopped
  more than ``stale_after`` seconds ago (a killed job, a lost node).

Nothing here imports Keras or TensorFlow; nothing runs at import.
"""

import contextlib
import json
import os
import secrets
import socket
import threading
import time

LOCK_NAME = ".lock"
HEARTBEAT_S = 30.0
# A heartbeat older than this marks a holder on another host as dead: ten missed beats.
STALE_AFTER_S = 300.0


class RunLocked(FileExistsError):
    """The run directory is in use by a live process (named in the message)."""


def lock_path(run_dir):
    return os.path.join(run_dir, LOCK_NAME)


def holder_info():
    """What a lock records about this process."""
    job = os.environ.get("SLURM_JOB_ID")
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": job,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def describe(holder):
    """``host vm, pid 123, SLURM job 45_2`` (job left out when there is none)."""
    text = f"host {holder.get('host')}, pid {holder.get('pid')}"
    if holder.get("slurm_job_id"):
        text += f", SLURM job {holder['slurm_job_id']}"
    return text


def read_holder(run_dir):
    """The holder recorded in ``run_dir``'s lock and the lock's age in seconds since its
    last heartbeat, or (None, None) when there is no lock. An unreadable lock (a holder
    killed while writing it) is returned as ``{}``."""
    path = lock_path(run_dir)
    try:
        with open(path) as f:
            text = f.read()
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return None, None
    try:
        holder = json.loads(text)
    except ValueError:
        holder = {}
    return (holder if isinstance(holder, dict) else {}), age


def _pid_alive(pid):
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def is_stale(holder, age, *, stale_after=STALE_AFTER_S):
    """Whether a lock's holder is dead: same host and its pid gone, or a heartbeat older
    than ``stale_after`` seconds (any host; also an unreadable lock that old)."""
    if holder and holder.get("host") == socket.gethostname() and \
            not _pid_alive(holder.get("pid")):
        return True
    return age is not None and age > stale_after


def lock_status(run_dir, *, stale_after=STALE_AFTER_S):
    """"held" (a live holder), "stale" (a dead one) or None (no lock), and the holder."""
    holder, age = read_holder(run_dir)
    if holder is None:
        return None, None
    return ("stale" if is_stale(holder, age, stale_after=stale_after) else "held"), holder


class RunLock:
    """Hold ``<run_dir>/.lock`` for the lifetime of a run (a context manager).

    Parameters
    ----------
    run_dir : str
        Created if missing.
    printer : callable, optional
        Gets the note when a stale lock is taken over.
    heartbeat, stale_after : float, optional
        Seconds between heartbeats, and the heartbeat age after which a holder on another
        host counts as dead. Defaults: :data:`HEARTBEAT_S`, :data:`STALE_AFTER_S`, or the
        environment's ``NOISYLABELS_LOCK_HEARTBEAT`` / ``NOISYLABELS_LOCK_STALE_AFTER``.
    """

    def __init__(self, run_dir, *, printer=None, heartbeat=None, stale_after=None):
        self.run_dir, self.printer = run_dir, printer
        self.heartbeat = float(heartbeat if heartbeat is not None else
                               os.environ.get("NOISYLABELS_LOCK_HEARTBEAT", HEARTBEAT_S))
        self.stale_after = float(stale_after if stale_after is not None else
                                 os.environ.get("NOISYLABELS_LOCK_STALE_AFTER", STALE_AFTER_S))
        if self.heartbeat <= 0 or self.stale_after <= self.heartbeat:
            raise ValueError("lock heartbeat must be positive and shorter than stale_after, "
                             f"got {self.heartbeat} and {self.stale_after}")
        self.path = lock_path(run_dir)
        self.token = None
        self._stop = threading.Event()
        self._thread = None

    def _create(self):
        """Try to create the lock file; True on success."""
        info = {**holder_info(), "token": secrets.token_hex(8)}
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
            f.write("\n")
        self.token = info["token"]
        return True

    def acquire(self):
        os.makedirs(self.run_dir, exist_ok=True)
        for _ in range(20):
            if self._create():
                break
            holder, age = read_holder(self.run_dir)
            if holder is None:
                continue  # released meanwhile: try again
            if not is_stale(holder, age, stale_after=self.stale_after):
                raise RunLocked(
                    f"run directory '{self.run_dir}' is in use by another process ("
                    f"{describe(holder)}, since {holder.get('started', '?')}): wait for it "
                    f"to finish, or stop it; if that process is gone, its lock "
                    f"'{self.path}' is taken over once its heartbeat is "
                    f"{self.stale_after:g} s old")
            if self._take_over(holder, age):
                break
        else:
            raise RunLocked(f"could not take the lock '{self.path}': other processes keep "
                            "taking it; try again")
        self._thread = threading.Thread(target=self._beat, name="run-lock-heartbeat",
                                        daemon=True)
        self._thread.start()
        return self

    def _take_over(self, holder, age):
        """Replace a stale lock by ours under a short-lived mutex (a directory, created
        atomically), so that two processes never both take over the same stale lock."""
        mutex = self.path + ".takeover"
        try:
            os.mkdir(mutex)
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):  # a taker killed mid-way
                if time.time() - os.stat(mutex).st_mtime > 60:
                    os.rmdir(mutex)
            time.sleep(0.2)
            return False
        try:
            again, again_age = read_holder(self.run_dir)
            if again is None or again != holder or \
                    not is_stale(again, again_age, stale_after=self.stale_after):
                return False  # someone else changed it: look again
            os.remove(self.path)
            if not self._create():
                return False
        finally:
            os.rmdir(mutex)
        if self.printer:
            why = ("its process is gone" if holder.get("host") == socket.gethostname()
                   else f"no heartbeat for {age:.0f} s")
            self.printer(f"note: took over the stale lock of '{self.run_dir}' from "
                         f"{describe(holder) if holder else 'an unreadable lock'} ({why})")
        return True

    def _beat(self):
        while not self._stop.wait(self.heartbeat):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        holder, _ = read_holder(self.run_dir)
        if holder and holder.get("token") == self.token:  # never another process's lock
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)
        self.token = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


def check_unlocked(run_dirs, *, stale_after=None):
    """Raise :class:`RunLocked` for the first of ``run_dirs`` a live process holds (before
    a grid starts anything; each run takes its lock again when it starts)."""
    stale_after = float(stale_after if stale_after is not None else
                        os.environ.get("NOISYLABELS_LOCK_STALE_AFTER", STALE_AFTER_S))
    for run_dir in run_dirs:
        status, holder = lock_status(run_dir, stale_after=stale_after)
        if status == "held":
            raise RunLocked(f"run directory '{run_dir}' is in use by another process ("
                            f"{describe(holder)}, since {holder.get('started', '?')}): wait "
                            "for it to finish or stop it, or leave this run out of the grid")
