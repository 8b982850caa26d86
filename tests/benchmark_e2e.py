"""End to end: the wall time of small INCV iterations and Co-teaching epochs through the real
script (incv_train.main), split into training, prediction, evaluation, diagnostics,
checkpoint / log writing and the rest (overhead).

    .venv/bin/python tests/benchmark_e2e.py                  # ~5 min on 2 cores
    .venv/bin/python tests/benchmark_e2e.py --n_train 4000 --out results/benchmark_e2e.json

Runs, on random CIFAR-shaped data (uint8 pixels / 255, written to a temporary .npz and read
through --dataset like any user file), each a fresh ``incv_train.main`` call in this process:

  incv_pair        one INCV iteration (--incv_only --incv_iterations 1), side by side
  incv_sequential  the same iteration, its two runs one after the other
  coteaching       --method coteaching --forget_rate 0.2 (no noise-estimation run)

The split: every call of ``keras.Model.fit`` / ``predict`` / ``evaluate``, of
``TrainDiagnostics.on_epoch_end`` and of the writers (``utils.save_npz``, ``write_json``,
``plots.*``) is timed; each category gets its calls' own time, without the nested calls of
another category (e.g. ``fit``'s time without the held-out predictions and test evaluations
its callbacks make). "training" is what remains of ``fit``: the steps, the input pipeline,
tracing, the light callbacks. "overhead" is the run's wall time minus all categories:
data loading, model building, INCV bookkeeping, Python.

Not a pytest test (the name does not match test_*.py).
"""

import argparse
import functools
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CATEGORIES = ("training", "prediction", "evaluation", "diagnostics", "writing")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n_train", type=int, default=2000, help="training images")
    p.add_argument("--n_test", type=int, default=1000, help="test images")
    p.add_argument("--arch", default="resnet32")
    p.add_argument("--incv_epochs", type=int, default=2, help="epochs of each INCV run")
    p.add_argument("--epochs", type=int, default=2, help="Co-teaching epochs")
    p.add_argument("--runs", nargs="+", default=["incv_pair", "incv_sequential", "coteaching"],
                   choices=("incv_pair", "incv_sequential", "coteaching"))
    p.add_argument("--precision", default="float32",
                   choices=("float32", "mixed_bfloat16", "mixed_float16"))
    p.add_argument("--out", default=os.path.join(ROOT, "results", "benchmark_e2e.json"))
    return p.parse_args(argv)


class Split:
    """Exclusive wall time per category of wrapped calls (nested calls of another
    category are subtracted from their caller)."""

    def __init__(self):
        self.totals = dict.fromkeys(CATEGORIES, 0.0)
        self.calls = dict.fromkeys(CATEGORIES, 0)
        self._stack = []  # [category, start, time of nested calls]

    def wrap(self, owner, name, category):
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*a, **kw):
            # Predictions made by the diagnostics count as diagnostics.
            cat = "diagnostics" if any(f[0] == "diagnostics" for f in self._stack) \
                else category
            self._stack.append([cat, time.perf_counter(), 0.0])
            try:
                return original(*a, **kw)
            finally:
                c, start, nested = self._stack.pop()
                elapsed = time.perf_counter() - start
                self.totals[c] += elapsed - nested
                self.calls[c] += 1
                if self._stack:
                    self._stack[-1][2] += elapsed
        setattr(owner, name, timed)
        return original

    def reset(self):
        self.totals = dict.fromkeys(CATEGORIES, 0.0)
        self.calls = dict.fromkeys(CATEGORIES, 0)


def instrument(split):
    import keras

    from noisylabels import plots, training, utils

    split.wrap(keras.Model, "fit", "training")
    split.wrap(keras.Model, "predict", "prediction")
    split.wrap(keras.Model, "evaluate", "evaluation")
    split.wrap(training.TrainDiagnostics, "on_epoch_end", "diagnostics")
    for name in ("save_npz", "write_json", "save_figure"):
        split.wrap(utils, name, "writing")
    for name in ("plot_incv", "plot_test_curves"):
        split.wrap(plots, name, "writing")


def fake_cifar(path, n_train, n_test):
    rng = np.random.default_rng(0)
    img = lambda n: rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)  # noqa: E731
    np.savez(path, x_train=img(n_train), y_train=rng.integers(0, 10, n_train),
             x_test=img(n_test), y_test=rng.integers(0, 10, n_test))


def run_flags(name, args):
    common = ["--arch", args.arch, "--noise_pattern", "sym", "--noisy_ratio", "0.5",
              "--verbose", "0", "--precision", args.precision]
    if name.startswith("incv"):
        return common + ["--method", "incv", "--incv_only", "--incv_iterations", "1",
                         "--incv_epochs", str(args.incv_epochs),
                         "--incv_parallel", name.split("_")[1]]
    return common + ["--method", "coteaching", "--forget_rate", "0.2",
                     "--epochs", str(args.epochs)]


def main(args):
    from noisylabels import utils

    utils.load_tensorflow()
    from noisylabels import incv_train

    split = Split()
    instrument(split)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        dataset = os.path.join(tmp, "fake_cifar.npz")
        fake_cifar(dataset, args.n_train, args.n_test)
        for name in args.runs:
            flags = ["--dataset", dataset, "--results_dir", os.path.join(tmp, name)]
            split.reset()
            t0 = time.perf_counter()
            incv_train.main(incv_train.parse_args(flags + run_flags(name, args)))
            wall = time.perf_counter() - t0
            row = {"wall_s": wall, **{f"{c}_s": split.totals[c] for c in CATEGORIES},
                   "calls": dict(split.calls)}
            row["overhead_s"] = wall - sum(split.totals.values())
            rows[name] = row
            print(f"{name}: {wall:.1f}s " + " ".join(
                f"{c}={row[c + '_s']:.1f}s" for c in CATEGORIES + ("overhead",)), flush=True)
    names = CATEGORIES + ("overhead",)
    lines = ["| run | wall s | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['wall_s']:.1f} | " + " | ".join(
            f"{row[c + '_s']:.1f} ({100 * row[c + '_s'] / row['wall_s']:.0f}%)" for c in names)
            + " |")
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    markdown = "\n".join(lines)
    print(f"\nload average {' '.join(load)}\n\n{markdown}")
    utils.write_json(args.out, {"command": " ".join(["tests/benchmark_e2e.py"] + sys.argv[1:]),
                                "args": vars(args), "runs": rows, "loadavg": load,
                                "table": markdown})
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main(parse_args())
