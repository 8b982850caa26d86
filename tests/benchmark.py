"""Training and prediction throughput, every path side by side, interleaved round by round.

    .venv/bin/python tests/benchmark.py                      # defaults: ~10 min on 2 cores
    .venv/bin/python tests/benchmark.py --torch_python /tmp/torchvenv/bin/python
    .venv/bin/python tests/benchmark.py --images 5120 --rounds 3 --out results/benchmark.json

Prints a Markdown table, the targets of issue 11 with their measured ratios, and writes JSON
(atomically, utils.write_json) to --out. Paths, all on the same random CIFAR-shaped data
(uint8 pixels / 255, like CIFAR; labels 0..9) and network:

  keras_fit       our one-network training: data.make_train_dataset (authors' shift + flip)
                  + training.compile_classifier + model.fit, whole epochs, pipeline included.
  paired_fit      INCV's two runs side by side: paired.PairedNetworks +
                  pipelines.make_paired_dataset + fit, each network on its own half of the images
                  (images counted for both networks: an epoch trains every image once).
  coteaching_fit  our fused Co-teaching: CoTeaching + pipelines.make_coteaching_dataset + fit.
  authors_loop    the authors' Co-teaching loop ported as is: per batch their augmentation
                  (the same Keras layers, called on the numpy batch), model.predict twice,
                  numpy cross-entropy + argsort, train_on_batch twice on the kept samples.
  predict         held-out prediction as INCV does it: model.predict(x, batch_size=1024).
  pipeline        make_train_dataset alone (no model): what the input pipeline costs.
  *_bf16          keras_fit / paired_fit / coteaching_fit / predict with their models built
                  under the mixed_bfloat16 policy (--precision mixed_bfloat16 of the scripts).
  torch_one/two/pair  plain PyTorch ResNet (channels_last): one-net step, two-net
                  Co-teaching step, two independent nets each on its own batch (INCV's
                  pair); the peer reference (no augmentation). They run in their own process
                  (tests/benchmark_torch.py, started with --torch_python), driven round by
                  round with the Keras paths; "n/a" when torch cannot be imported there.

Every path runs once untimed (tracing, allocation), then --rounds times round-robin, so that
load from other processes on the machine hits all paths alike. The table shows the best,
median and worst round and their spread (how steady a figure is); every ratio and target is
of medians. The JSON keeps each round's wall and CPU seconds and the load average
(/proc/loadavg) around it. "img/CPU-s" (images per CPU-second of the process that ran the
path, median) is a second, load-robust view on a shared machine.

Thread settings: the scripts' choice (noisylabels/threads.py: intra-op = the usable cores,
inter-op = 1) unless --intra_op / --inter_op say otherwise (0: TF's own default).

    .venv/bin/python tests/benchmark.py --sweep            # 0,0 auto 1,1 2,2 1,2 side by side
    .venv/bin/python tests/benchmark.py --sweep 0,0 auto --images 1280 --rounds 5

--sweep runs each thread setting in its own process (TF fixes its pools once built), warms
them all up, then interleaves their rounds (rotating which goes first) with the PyTorch
peer's, and prints a row per path, a column per setting (docs/threads.md).

The fp32 limit: a float32 matmul peak measured in each round (TF, same threads) divided by the
FLOPs an image costs on that path (convolution + dense layers counted from the layer shapes;
training = 3 x forward; Co-teaching = two networks; the authors' loop also predicts twice).

Not a pytest test: the file name does not match test_*.py, so pytest never collects it
(tests/test_benchmark.py runs it tiny, without torch).
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


SWEEP_DEFAULT = ("0,0", "auto", "1,1", "2,2", "1,2")
SWEEP_PATHS = ("keras_fit", "paired_fit", "coteaching_fit", "authors_loop")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", "--steps", dest="images", type=int, default=2560,
                   help="images per timed epoch (default 2560 = 20 steps of 128)")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--arch", default="resnet32")
    p.add_argument("--rounds", type=int, default=3,
                   help="timed rounds after the warm-up one (at least 1; best, median and "
                        "worst are reported, the targets judged on the median)")
    p.add_argument("--forget_rate", type=float, default=0.2, help="Co-teaching forget rate")
    p.add_argument("--predict_images", type=int, default=10240)
    p.add_argument("--paths", nargs="+", default=None, help="run only these paths")
    p.add_argument("--steps_per_execution", type=int, default=1)
    p.add_argument("--intra_op", type=int, default=None,
                   help="TF intra-op threads (default: the scripts' choice, "
                        "noisylabels/threads.py; 0: TF's own default)")
    p.add_argument("--inter_op", type=int, default=None,
                   help="TF inter-op threads (default: the scripts' choice; 0: TF's own)")
    p.add_argument("--sweep", nargs="*", default=None, metavar="INTRA,INTER",
                   help="try thread settings side by side: one process per setting (INTRA,"
                        "INTER as --intra_op,--inter_op; 'auto' = the scripts' choice), "
                        "rounds interleaved; default settings: " + " ".join(SWEEP_DEFAULT))
    p.add_argument("--serve", action="store_true",
                   help="(internal, for --sweep) warm up, then run one round per line read "
                        "from stdin and answer with its JSON")
    p.add_argument("--onednn", choices=("on", "off", "env"), default="on",
                   help="TF_ENABLE_ONEDNN_OPTS before TF loads (TF leaves oneDNN off on CPUs "
                        "without AVX-512; 'env': keep the environment's)")
    p.add_argument("--precision", choices=("float32", "mixed_bfloat16", "mixed_float16"),
                   default="float32",
                   help="Keras dtype policy of the plain Keras paths (the *_bf16 paths are "
                        "always mixed_bfloat16; bf16 only pays on CPUs with avx512_bf16 / AMX)")
    p.add_argument("--jit_compile", choices=("auto", "on", "off"), default="auto",
                   help="XLA for the one-network and paired steps (Keras' auto: off on a CPU)")
    p.add_argument("--torch_python", default=sys.executable,
                   help="Python interpreter that runs the PyTorch peer "
                        "(tests/benchmark_torch.py) in its own process; default: this one")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "benchmark.json"))
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds must be at least 1, got {args.rounds}")
    for flag in ("intra_op", "inter_op"):
        if getattr(args, flag) is not None and getattr(args, flag) < 0:
            p.error(f"--{flag} must be a non-negative integer (0: TF's default)")
    if args.sweep is not None:
        try:
            args.sweep = [parse_setting(v) for v in (args.sweep or SWEEP_DEFAULT)]
        except ValueError as err:
            p.error(str(err))
    return args


def parse_setting(text):
    """A --sweep setting "INTRA,INTER" (or "auto") as (intra_op, inter_op), None = auto."""
    if text == "auto":
        return (None, None)
    parts = text.split(",")
    try:
        values = tuple(int(v) for v in parts)
    except ValueError:
        values = ()
    if len(values) != 2 or min(values) < 0:
        raise ValueError(f"--sweep: {text!r} is not INTRA,INTER (two non-negative integers, "
                         "0: TF's default) or 'auto'")
    return values


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.onednn != "env":  # read once, when TensorFlow's library loads
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if ARGS.onednn == "on" else "0"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, ROOT)

import contextlib  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from noisylabels import (
    models,  # noqa: E402
    paired,  # noqa: E402
    pipelines,  # noqa: E402
    threads,  # noqa: E402
    training,  # noqa: E402
    utils,  # noqa: E402
)
from noisylabels.coteaching import CoTeaching  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


# --------------------------------------------------------------------------- FLOPs and peak

def forward_flops(model):
    """FLOPs of one image's forward pass: 2 x multiply-adds of the Conv2D and Dense layers
    (BatchNorm, ReLU, adds and pooling are memory-bound and under 1% of the arithmetic)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            h, w = layer.output.shape[1:3]
            total += 2 * h * w * kh * kw * cin * cout
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return int(total)


def matmul_gflops(n=2048, reps=5):
    """Best-of float32 (n x n) @ (n x n) GFLOP/s in TF, with the threads training uses."""
    a = tf.random.uniform((n, n), dtype=tf.float32)
    mm = tf.function(lambda u: tf.reduce_sum(tf.matmul(u, u)))
    mm(a).numpy()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        mm(a).numpy()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def cpu_features():
    flags = set()
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            flags = next((set(line.split(":", 1)[1].split()) for line in f
                          if line.startswith("flags")), set())
    return {k: k in flags for k in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")}


# --------------------------------------------------------------------------- Keras paths

def build(args, data):
    return models.build_model(args.arch, data["x"].shape[1:], 10)


def _jit(args):
    return {"auto": "auto", "on": True, "off": False}[args.jit_compile]


@contextlib.contextmanager
def policy(name):
    """Build under the dtype policy ``name`` (models keep it once built), then restore."""
    before = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def bf16(builder):
    def build_bf16(args, data):
        with policy("mixed_bfloat16"):
            return builder(args, data)
    return build_bf16


def keras_fit(args, data):
    model = training.compile_classifier(build(args, data),
                                        steps_per_execution=args.steps_per_execution,
                                        jit_compile=_jit(args))
    ds = pipelines.make_train_dataset(data["x"], data["y"], batch_size=args.batch_size,
                                  augment="standard", seed=0)

    def epoch():
        model.fit(ds, epochs=1, verbose=0)
        return len(data["y"])
    return epoch


def paired_fit(args, data):
    """INCV's pair: two networks, each on its own half, side by side in one step."""
    pair = paired.PairedNetworks(build(args, data), build(args, data))
    jit = _jit(args)
    pair.compile(optimizer1=keras.optimizers.Adam(1e-3), optimizer2=keras.optimizers.Adam(1e-3),
                 steps_per_execution=args.steps_per_execution,
                 **({} if jit == "auto" else {"jit_compile": jit}))
    n = len(data["y"])
    half = n // 2
    ds = pipelines.make_paired_dataset(data["x"][:half], data["y"][:half], data["x"][half:],
                                      data["y"][half:], batch_size=args.batch_size,
                                      augment="standard", seed=0)

    def epoch():
        pair.fit(ds, epochs=1, verbose=0)
        return n  # each image trained once, by one of the two networks
    return epoch


def coteaching_fit(args, data):
    cot = CoTeaching(build(args, data), build(args, data))
    cot.compile(optimizer1=keras.optimizers.Adam(1e-3), optimizer2=keras.optimizers.Adam(1e-3),
                steps_per_execution=args.steps_per_execution)
    cot.forget_rate.assign(args.forget_rate)
    n = len(data["y"])
    # All images in S, C empty: the same batches of --batch_size as the other paths.
    ds = pipelines.make_coteaching_dataset(data["x"], data["y"], data["clean"], np.arange(n),
                                       np.arange(0), batch_size=args.batch_size,
                                       c_batch_size=0, augment="standard", seed=0)

    def epoch():
        cot.fit(ds, epochs=1, verbose=0)
        return n
    return epoch


def authors_loop(args, data):
    """Their per-step Python loop, with Keras 3 calls in place of Keras 2's."""
    nets = [training.compile_classifier(build(args, data)) for _ in range(2)]
    augment = pipelines.make_augmenter("standard", seed=0)
    rng = np.random.default_rng(0)
    x, y = data["x"], data["y"]

    def epoch():
        order = rng.permutation(len(y))
        for start in range(0, len(y), args.batch_size):
            idx = order[start:start + args.batch_size]
            xb = keras.ops.convert_to_numpy(augment(x[idx], training=True))
            yb = y[idx]
            # model.predict(x_batch) as they called it (no batch_size: Keras' default 32).
            p1, p2 = nets[0].predict(xb, verbose=0), nets[1].predict(xb, verbose=0)
            ce1 = -np.log(p1[np.arange(len(yb)), yb] + 1e-8)  # their log(p + 1e-8)
            ce2 = -np.log(p2[np.arange(len(yb)), yb] + 1e-8)
            keep = round(len(yb) * (1 - args.forget_rate))
            pick1, pick2 = np.argsort(ce1)[:keep], np.argsort(ce2)[:keep]
            nets[0].train_on_batch(xb[pick2], yb[pick2])  # each learns from its peer's picks
            nets[1].train_on_batch(xb[pick1], yb[pick1])
        return len(y)
    return epoch


def predict(args, data):
    model = training.compile_classifier(build(args, data))
    reps = -(-args.predict_images // len(data["y"]))
    x = np.concatenate([data["x"]] * reps)[:args.predict_images]
    return lambda: len(model.predict(x, batch_size=1024, verbose=0))


def pipeline(args, data):
    ds = pipelines.make_train_dataset(data["x"], data["y"], batch_size=args.batch_size,
                                  augment="standard", seed=0)
    return lambda: sum(int(yb.shape[0]) for _, yb in ds)


# --------------------------------------------------------------------------- PyTorch peer

TORCH_PATHS = ("torch_one", "torch_two", "torch_pair")


class TorchPeer:
    """tests/benchmark_torch.py in its own process, run one path-epoch per request."""

    def __init__(self, args):
        self.error, self.info, self.proc = None, {}, None
        cmd = [args.torch_python, os.path.join(HERE, "benchmark_torch.py"), "--serve",
               "--images", str(args.images), "--batch_size", str(args.batch_size),
               "--arch", args.arch, "--forget_rate", str(args.forget_rate),
               "--threads", str(args.intra_op or 0)]
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True, bufsize=1)
        except OSError as err:
            self.error = f"cannot start --torch_python {args.torch_python!r}: {err}"
            return
        line = self.proc.stdout.readline()
        try:
            self.info = json.loads(line)
        except json.JSONDecodeError:
            self.info = {"ready": False, "error": f"no answer (exit status {self.proc.wait()})"}
        if not self.info.get("ready"):
            self.error = self.info.get("error", "not ready")
            self.close()

    def path(self, name):
        def run():
            self.proc.stdin.write(name + "\n")
            self.proc.stdin.flush()
            return json.loads(self.proc.stdout.readline())
        return run

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.write("\n")
                self.proc.stdin.flush()
            self.proc.wait(timeout=60)


# --------------------------------------------------------------------------- table

def paths(keep):
    """name: (builder, FLOPs per image in forward passes, PyTorch peer kind, table label);
    ``keep`` is the fraction of each batch the Co-teaching steps train on."""
    return {
        "keras_fit": (keras_fit, 3, "one", "one network: make_train_dataset + fit"),
        "paired_fit": (paired_fit, 3, "pair",
                       "INCV pair: PairedNetworks + make_paired_dataset + fit (both nets' images)"),
        "coteaching_fit": (coteaching_fit, 6, "two",
                           "Co-teaching: CoTeaching + make_coteaching_dataset + fit"),
        "authors_loop": (authors_loop, 2 + 6 * keep, "two",
                         "authors' loop: 2x predict, numpy sort, 2x train_on_batch"),
        "predict": (predict, 1, None, "predict, batch 1024 (INCV held-out)"),
        "pipeline": (pipeline, 0, None, "input pipeline alone (shift + flip)"),
        "keras_fit_bf16": (bf16(keras_fit), 3, "one", "one network, mixed_bfloat16"),
        "paired_fit_bf16": (bf16(paired_fit), 3, "pair", "INCV pair, mixed_bfloat16"),
        "coteaching_fit_bf16": (bf16(coteaching_fit), 6, "two", "Co-teaching, mixed_bfloat16"),
        "predict_bf16": (bf16(predict), 1, None, "predict, batch 1024, mixed_bfloat16"),
        "torch_one": (None, 3, "one", "PyTorch one network, channels_last (own process)"),
        "torch_two": (None, 6, "two", "PyTorch two-net Co-teaching step (own process)"),
        "torch_pair": (None, 3, "pair",
                       "PyTorch INCV pair: two nets, own batches (both nets' images)"),
    }


def _fmt(value, spec):
    return "n/a" if value is None else format(value, spec)


def round_stats(rounds):
    """Best, median and worst images/s of a path's rounds (each ``{"images", "wall_s"}``)."""
    if not rounds:
        raise ValueError("no rounds to summarise")
    rates = [r["images"] / r["wall_s"] for r in rounds]
    return {"best": max(rates), "median": statistics.median(rates), "worst": min(rates)}


def _bmw(stats):
    return f"{stats['best']:.0f} / {stats['median']:.0f} / {stats['worst']:.0f}"


def summarize(results, table, peak, fwd):
    """Add the derived figures to ``results`` and return the Markdown table. The ratios
    are of medians (a best round can be a lucky one, see --sweep)."""
    stats = {k: round_stats(v["rounds"]) for k, v in results.items()}
    median = {k: v["median"] for k, v in stats.items()}
    authors = median.get("authors_loop")
    torch_ref = {"one": median.get("torch_one"), "two": median.get("torch_two"),
                 "pair": median.get("torch_pair")}
    header = ("| path | images/s best / median / worst | spread | img/CPU-s | x authors' loop "
              "| x PyTorch | % of fp32 limit |")
    lines = [header, "|---|---|---|---|---|---|---|"]
    for name, (_, units, kind, label) in table.items():
        if name not in results:
            lines.append(f"| {label} |" + " n/a |" * 6)
            continue
        rounds, m = results[name]["rounds"], median[name]
        ref = torch_ref.get(kind)
        limit = peak * 1e9 / (units * fwd) if units else None  # images/s at the matmul peak
        r = results[name]
        r.update(best_images_per_s=stats[name]["best"], median_images_per_s=m,
                 worst_images_per_s=stats[name]["worst"],
                 spread=(stats[name]["best"] - stats[name]["worst"]) / m,
                 images_per_cpu_s=statistics.median(x["images"] / max(x["cpu_s"], 1e-9)
                                                    for x in rounds),
                 flops_per_image=units * fwd,
                 vs_authors=m / authors if authors else None,
                 vs_torch=m / ref if ref else None,
                 percent_of_fp32_limit=100 * m / limit if limit else None)
        lines.append(f"| {label} | {_bmw(stats[name])} | {100 * r['spread']:.0f}% | "
                     f"{r['images_per_cpu_s']:.0f} | {_fmt(r['vs_authors'], '.2f')} | "
                     f"{_fmt(r['vs_torch'], '.2f')} | "
                     f"{_fmt(r['percent_of_fp32_limit'], '.0f')}% |".replace("n/a%", "n/a"))
    return "\n".join(lines)


def targets(results):
    """The targets (issue 11's, with issue 22's for a 2-core machine where they overlap):
    (what, measured ratio of median rounds or None, target) rows and their Markdown."""
    med = {k: v.get("median_images_per_s") for k, v in results.items()}

    def ratio(a, b, scale=1.0):
        return med[a] / (scale * med[b]) if med.get(a) and med.get(b) else None

    rows = [("INCV pair vs one network (keras_fit)", ratio("paired_fit", "keras_fit"), 1.3),
            ("INCV pair vs 2 x PyTorch two-net step", ratio("paired_fit", "torch_two", 2.0),
             1.0),
            ("INCV pair vs PyTorch pair (two nets, own batches)",
             ratio("paired_fit", "torch_pair"), 1.0),
            ("Co-teaching vs PyTorch two-net step", ratio("coteaching_fit", "torch_two"), 1.0),
            ("Co-teaching vs the authors' loop", ratio("coteaching_fit", "authors_loop"), 1.5),
            ("one network vs PyTorch one network", ratio("keras_fit", "torch_one"), 0.8),
            ("one network bf16 vs fp32", ratio("keras_fit_bf16", "keras_fit"), None),
            ("INCV pair bf16 vs fp32", ratio("paired_fit_bf16", "paired_fit"), None),
            ("Co-teaching bf16 vs fp32", ratio("coteaching_fit_bf16", "coteaching_fit"), None),
            ("predict bf16 vs fp32", ratio("predict_bf16", "predict"), None)]
    lines = ["| target (median rounds) | measured | wanted | |", "|---|---|---|---|"]
    for what, value, want in rows:
        verdict = "" if value is None or want is None else (
            "met" if value >= want else f"missed by {100 * (1 - value / want):.0f}%")
        lines.append(f"| {what} | {_fmt(value, '.2f')}{'x' if value else ''} | "
                     f"{'>= ' + format(want, 'g') + 'x' if want else '(lever)'} | {verdict} |")
    return [{"what": w, "ratio": v, "target": t} for w, v, t in rows], "\n".join(lines)


def loadavg():
    """The first three fields of /proc/loadavg (1, 5, 15 min), or os.getloadavg()."""
    try:
        with open("/proc/loadavg") as f:
            return [float(v) for v in f.read().split()[:3]]
    except OSError:
        return list(os.getloadavg())


# --------------------------------------------------------------------------- main

def apply_threads(args):
    """Give TF the thread settings of --intra_op / --inter_op (None: the scripts' choice)
    before any op runs; returns what config.json would record (threads.record)."""
    settings = threads.choose_threads(threads.available_cores(), intra_op=args.intra_op,
                                      inter_op=args.inter_op)
    return threads.record(settings, threads.apply(settings, printer=print))


def prepare(args):
    """The data, FLOPs per forward pass, path table and the runners (not yet warmed up)."""
    if args.precision != "float32":
        keras.mixed_precision.set_global_policy(args.precision)
    rng = np.random.default_rng(0)  # tests/benchmark_torch.py draws the same data
    n = args.images
    data = {"x": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8).astype(np.float32) / 255,
            "y": rng.integers(0, 10, n), "clean": rng.random(n) < 0.8}
    fwd = forward_flops(build(args, data))
    table = paths(1 - args.forget_rate)
    wanted = args.paths or (list(SWEEP_PATHS + TORCH_PATHS) if args.sweep is not None
                            else list(table))
    unknown = set(wanted) - set(table)
    if unknown:
        raise SystemExit(f"error: --paths: unknown {sorted(unknown)}; choose from {list(table)}")
    return data, fwd, table, wanted


def start_torch(args, wanted):
    """The PyTorch peer (or None) and the paths left to run, with the note to print."""
    v1_resnet = args.arch in ("resnet20", "resnet32", "resnet44", "resnet56")
    peer, torch_note = None, None
    if any(p in TORCH_PATHS for p in wanted):
        if not v1_resnet:  # the peer exists for the v1 ResNets only
            torch_note = f"no PyTorch peer for --arch {args.arch}"
        else:
            peer = TorchPeer(args)
            torch_note = peer.error
            if peer.error:
                peer = None
        if peer is None:
            print(f"PyTorch paths: n/a ({torch_note})", flush=True)
            wanted = [p for p in wanted if p not in TORCH_PATHS]
    return peer, torch_note, wanted


def timed(name, run):
    if name in TORCH_PATHS:
        return run()  # timed in its own process
    t, c = time.perf_counter(), time.process_time()
    images = run()
    return {"images": images, "wall_s": time.perf_counter() - t,
            "cpu_s": time.process_time() - c, "finished": time.time()}


def one_round(runners):
    """Every runner once, in order: {name: round record with the load average after it}."""
    out = {}
    for name, run in runners.items():
        rec = timed(name, run)
        rec["loadavg"] = loadavg()
        out[name] = rec
    return out


def main(args):
    if args.sweep is not None:
        return sweep(args)
    thread_record = apply_threads(args)  # before any op
    data, fwd, table, wanted = prepare(args)
    peer, torch_note, wanted = (None, None, [p for p in wanted if p not in TORCH_PATHS]) \
        if args.serve else start_torch(args, wanted)
    keras.utils.set_random_seed(0)
    runners = {k: (peer.path(k) if k in TORCH_PATHS else table[k][0](args, data))
               for k in wanted}
    for name, run in runners.items():  # tracing and first allocations: not timed
        if name not in TORCH_PATHS:  # (the peer warmed up when it started)
            run()
    if args.serve:
        return serve(runners, thread_record, fwd)
    n = args.images
    print(f"{args.arch}: {fwd / 1e6:.1f} MFLOP forward per image; {n} images x "
          f"{args.rounds} rounds; threads intra-op {thread_record['intra_op']}, inter-op "
          f"{thread_record['inter_op']} (0: TF's default)", flush=True)
    results = {k: {"rounds": []} for k in runners}
    peaks, loads = [], [loadavg()]
    for r in range(args.rounds):
        peaks.append(matmul_gflops())
        for name, rec in one_round(runners).items():
            results[name]["rounds"].append(rec)
            print(f"  round {r + 1} {name}: {rec['images'] / rec['wall_s']:.0f} images/s "
                  f"(load {rec['loadavg'][0]:.2f})", flush=True)
        loads.append(loadavg())
    if peer is not None:
        peer.close()
    peak = max(peaks)
    markdown = summarize(results, table, peak, fwd)
    goals, goals_md = targets(results)
    one_min = [v[0] for v in loads]
    header = (f"fp32 matmul peak {peak:.0f} GFLOP/s (best of {len(peaks)}); training limit "
              f"{peak * 1e9 / (3 * fwd):.0f} images/s per network; load average (1 min, "
              f"/proc/loadavg) {min(one_min):.2f}..{max(one_min):.2f} on {os.cpu_count()} CPUs")
    print(f"\n{header}\n")
    print(markdown)
    print("\n" + goals_md)
    torch_version = peer.info.get("torch") if peer is not None else None
    utils.write_json(args.out, {
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
        "args": vars(args), "forward_flops_per_image": fwd, "matmul_gflops": peaks,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "cpu": cpu_features(),
        "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "load_average": loads,
        "threads": thread_record,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                     "torch": torch_version},
        "torch": torch_note or "ran in its own process", "paths": results,
        "header": header, "table": markdown, "targets": goals, "targets_table": goals_md})
    print(f"\nwrote {args.out}")


# --------------------------------------------------------------------------- --sweep

def serve(runners, thread_record, fwd):
    """--serve: say ready (with the thread settings in effect), then one round per line
    read from stdin, answered with one JSON line; an empty line or EOF ends."""
    print(json.dumps({"ready": True, "threads": thread_record, "fwd": fwd}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        print(json.dumps({"peak": matmul_gflops(), "rounds": one_round(runners)}), flush=True)


def setting_label(setting, cores):
    """A sweep column's name, e.g. "TF default (0,0)", "auto (2,1)", "1,2"."""
    intra, inter = setting
    if setting == (None, None):
        chosen = threads.choose_threads(cores)
        return f"auto ({chosen['intra_op']},{chosen['inter_op']})"
    return "TF default (0,0)" if setting == (0, 0) else f"{intra},{inter}"


def dedupe_settings(settings, cores):
    """Drop settings that resolve to the same (intra, inter) on this machine (``auto`` and
    its explicit values), keeping the first."""
    seen, kept = set(), []
    for intra, inter in settings:
        chosen = threads.choose_threads(cores, intra_op=intra, inter_op=inter)
        key = (chosen["intra_op"], chosen["inter_op"])
        if key not in seen:
            seen.add(key)
            kept.append((intra, inter))
    return kept


class SettingProcess:
    """tests/benchmark.py --serve with one thread setting, in its own process (TF's thread
    pools are fixed once built, so every setting needs a fresh process)."""

    def __init__(self, args, setting, paths_):
        cmd = [sys.executable, os.path.abspath(__file__), "--serve", "--images",
               str(args.images), "--batch_size", str(args.batch_size), "--arch", args.arch,
               "--forget_rate", str(args.forget_rate), "--predict_images",
               str(args.predict_images), "--steps_per_execution", str(args.steps_per_execution),
               "--onednn", args.onednn, "--precision", args.precision, "--jit_compile",
               args.jit_compile, "--paths", *paths_]
        if setting[0] is not None:
            cmd += ["--intra_op", str(setting[0]), "--inter_op", str(setting[1])]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.info = self._answer()

    def _answer(self):
        while True:  # skip lines that are not ours (TF / Keras may print)
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"--sweep: a setting's process ended (exit status "
                                   f"{self.proc.wait()})")
            if line.startswith("{"):
                return json.loads(line)

    def round(self):
        self.proc.stdin.write("round\n")
        self.proc.stdin.flush()
        return self._answer()

    def close(self):
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.write("\n")
                self.proc.stdin.flush()
            self.proc.wait(timeout=120)


def sweep_table(columns, torch_results, table):
    """The Markdown table of a sweep: a row per path, a column per setting, each cell
    "best / median / worst (median x the first column)"; the PyTorch peer in its own
    column."""
    labels = [c["label"] for c in columns]
    names = [k for k in table if any(k in c["paths"] for c in columns) or k in torch_results]
    lines = ["| path | " + " | ".join(labels) + " | PyTorch (own process) |",
             "|---|" + "---|" * (len(labels) + 1)]
    for name in names:
        cells, first = [], None
        for c in columns:
            if name not in c["paths"]:
                cells.append("")
                continue
            st = round_stats(c["paths"][name]["rounds"])
            first = first or st["median"]
            cells.append(f"{_bmw(st)} ({st['median'] / first:.2f}x)")
        torch_cell = _bmw(round_stats(torch_results[name]["rounds"])) \
            if name in torch_results else ""
        lines.append(f"| {table[name][3]} | " + " | ".join(cells) + f" | {torch_cell} |")
    return "\n".join(lines)


def sweep(args):
    """--sweep: every setting in its own --serve process, warmed up one after the other,
    then --rounds rounds, each running every setting (in a rotated order, so no setting
    always goes first) and the PyTorch peer: load from the rest of the machine hits all
    alike."""
    cores = threads.available_cores()
    settings = dedupe_settings(args.sweep, cores)
    table = paths(1 - args.forget_rate)
    wanted = args.paths or list(SWEEP_PATHS + TORCH_PATHS)
    unknown = set(wanted) - set(table)
    if unknown:
        raise SystemExit(f"error: --paths: unknown {sorted(unknown)}; choose from {list(table)}")
    peer, torch_note, wanted = start_torch(args, wanted)
    keras_paths = [p for p in wanted if p not in TORCH_PATHS]
    columns, procs = [], []
    try:
        for setting in settings:
            print(f"warming up {setting_label(setting, cores)} ...", flush=True)
            proc = SettingProcess(args, setting, keras_paths)
            procs.append(proc)
            columns.append({"label": setting_label(setting, cores), "setting": list(setting),
                            "threads": proc.info["threads"], "peaks": [],
                            "paths": {k: {"rounds": []} for k in keras_paths}})
        torch_results = {k: {"rounds": []} for k in wanted if k in TORCH_PATHS}
        loads = [loadavg()]
        for r in range(args.rounds):
            order = list(range(len(procs)))
            order = order[r % len(order):] + order[:r % len(order)]
            for i in order:
                answer = procs[i].round()
                columns[i]["peaks"].append(answer["peak"])
                for name, rec in answer["rounds"].items():
                    columns[i]["paths"][name]["rounds"].append(rec)
                print(f"  round {r + 1} {columns[i]['label']}: " + ", ".join(
                    f"{k} {v['images'] / v['wall_s']:.0f}" for k, v in answer["rounds"].items())
                    + f" images/s (load {loadavg()[0]:.2f})", flush=True)
            for name, rec in one_round({k: peer.path(k) for k in torch_results}).items():
                torch_results[name]["rounds"].append(rec)
            loads.append(loadavg())
    finally:
        for proc in procs:
            proc.close()
        if peer is not None:
            peer.close()
    markdown = sweep_table(columns, torch_results, table)
    one_min = [v[0] for v in loads]
    header = (f"{args.arch}, {args.images} images x {args.rounds} rounds per setting, "
              f"interleaved; {cpu_model()}, {cores} usable cores; load average (1 min) "
              f"{min(one_min):.2f}..{max(one_min):.2f}; cells: images/s best / median / "
              "worst (median x the first column)")
    print(f"\n{header}\n\n{markdown}")
    utils.write_json(args.out, {
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
        "args": vars(args), "cpu_model": cpu_model(), "cores": cores,
        "cpu_count": os.cpu_count(), "load_average": loads, "sweep": columns,
        "torch": torch_results, "torch_note": torch_note or "ran in its own process",
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                     "torch": peer.info.get("torch") if peer is not None else None},
        "header": header, "table": markdown})
    print(f"\nwrote {args.out}")


def cpu_model():
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return None


if __name__ == "__main__":
    main(ARGS)
