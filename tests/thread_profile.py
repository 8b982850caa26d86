"""Where a training epoch's CPU time goes, per thread, under one thread setting: the
profile behind docs/threads.md's "why" (which threads compute, how many cores are busy).

    .venv/bin/python tests/thread_profile.py --intra_op 0 --inter_op 0   # TF's defaults
    .venv/bin/python tests/thread_profile.py                             # the scripts' choice
    .venv/bin/python tests/thread_profile.py --path pair --epochs 3

Runs ``--epochs`` untimed warm-up epochs, then ``--epochs`` timed ones of ResNet-32 on random
CIFAR-shaped images through the scripts' own pipeline (pipelines.make_train_dataset + fit,
or INCV's pair), reading every thread's CPU time (/proc/self/task/*/stat, utime + stime)
before and after the timed epochs. Prints images/s, the cores busy (process CPU seconds /
wall seconds) and each thread group's cores (threads grouped by name: tf_Compute = the
inter-op pool and tf.data's workers, unnamed python threads = Eigen's intra-op pool), and
one JSON line. Linux only (/proc).
"""

import argparse
import collections
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--intra_op", type=int, default=None,
                   help="intra-op threads (0: TF's default; default: the scripts' choice)")
    p.add_argument("--inter_op", type=int, default=None,
                   help="inter-op threads (0: TF's default; default: the scripts' choice)")
    p.add_argument("--path", type=str, default="one", choices=("one", "pair"))
    p.add_argument("--images", type=int, default=1280)
    p.add_argument("--epochs", type=int, default=2, help="warm-up epochs, then timed epochs")
    p.add_argument("--arch", type=str, default="resnet32")
    return p.parse_args(argv)


def _task_stats():
    """{tid: (name, the fields after the name)} of /proc/self/task/TID/stat."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # the thread ended
        out[tid] = (stat[stat.index("(") + 1:stat.rindex(")")],
                    stat[stat.rindex(")") + 2:].split())
    return out


def thread_times():
    """{tid: (name, cpu seconds)} of this process's threads (utime + stime)."""
    return {tid: (name, (int(f[11]) + int(f[12])) / TICK)
            for tid, (name, f) in _task_stats().items()}


def thread_cpus():
    """{tid: the CPU the thread last ran on} (field 39 of the stat line)."""
    return {tid: int(f[36]) for tid, (_, f) in _task_stats().items()}


class CpuSampler:
    """Every 50 ms, which CPU each thread is on: do the busy threads share one core?"""

    def __init__(self):
        import threading

        self.samples, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.05):
            self.samples.append(thread_cpus())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def shared_fraction(self, tids):
        """Of the samples, the fraction in which the threads ``tids`` sat on one CPU."""
        both = [s for s in self.samples if all(t in s for t in tids)]
        same = sum(len({s[t] for t in tids}) == 1 for s in both)
        return same / len(both) if both else None


def main(args):
    sys.path.insert(0, ROOT)
    from noisylabels import threads, utils

    choice = threads.choose_threads(threads.available_cores(), intra_op=args.intra_op,
                                    inter_op=args.inter_op)
    utils.load_tensorflow(threads=choice)
    from noisylabels import models, paired, pipelines, training

    rng = np.random.default_rng(0)
    n = args.images
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8).astype(np.float32) / 255
    y = rng.integers(0, 10, n).astype(np.int64)
    build = lambda: models.build_model(args.arch, (32, 32, 3), 10)  # noqa: E731
    if args.path == "one":
        model = training.compile_classifier(build())
        make = lambda: pipelines.make_train_dataset(x, y, batch_size=128,  # noqa: E731
                                                    augment="standard", seed=0)
        per_epoch = n
    else:
        model = paired.PairedNetworks(build(), build())
        model.compile(training.adam(1e-3), training.adam(1e-3))
        h = n // 2
        make = lambda: pipelines.make_paired_dataset(x[:h], y[:h], x[h:], y[h:],  # noqa: E731
                                                     batch_size=128, augment="standard",
                                                     seed=0)
        per_epoch = 2 * h

    def epochs():
        ds = make()
        model.fit(ds, epochs=args.epochs, verbose=0, shuffle=False,
                  callbacks=pipelines.epoch_callbacks(ds))

    epochs()  # warm-up: tracing, first allocations
    before, t0, c0 = thread_times(), time.perf_counter(), time.process_time()
    with CpuSampler() as sampler:
        epochs()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    after = thread_times()
    groups = collections.defaultdict(lambda: [0, 0.0])
    busy = []
    deltas = {}
    for tid, (name, t) in after.items():
        d = deltas[tid] = t - before.get(tid, (name, 0.0))[1]
        groups[name][0] += 1
        groups[name][1] += d
        if d / wall > 0.02:
            busy.append((name, round(d / wall, 2)))
    top2 = sorted(deltas, key=deltas.get)[-2:]  # the two busiest threads
    tf = utils.load_tensorflow()
    result = {
        "path": args.path, "arch": args.arch, "images_per_s": per_epoch * args.epochs / wall,
        "cores_busy": cpu / wall, "cores": choice["cores"],
        "threads_in_effect": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                              "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
        "groups": {k: {"threads": v[0], "cores": round(v[1] / wall, 3)}
                   for k, v in sorted(groups.items(), key=lambda kv: -kv[1][1])},
        "busy_threads": sorted(busy, key=lambda b: -b[1]),
        "busiest_two_on_one_cpu": sampler.shared_fraction(top2), "loadavg": os.getloadavg()}
    print(f"{args.path}, {args.arch}, threads {result['threads_in_effect']}: "
          f"{result['images_per_s']:.0f} images/s, {result['cores_busy']:.2f} cores busy")
    for name, g in result["groups"].items():
        if g["cores"] >= 0.01:
            print(f"  {name:>20}: {g['threads']} threads, {g['cores']:.2f} cores")
    print("  busy threads (> 0.02 cores):", result["busy_threads"])
    print(f"  the two busiest threads on one CPU in {result['busiest_two_on_one_cpu']:.0%} "
          "of 50 ms samples")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
