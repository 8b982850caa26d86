"""Training and prediction throughput, every path side by side in one process.

    .venv/bin/python tests/benchmark.py                      # defaults: a few minutes on 2 cores
    .venv/bin/python tests/benchmark.py --images 5120 --rounds 3 --out results/benchmark.json

Prints a Markdown table and writes JSON (atomically, utils.write_json) to --out. Paths, all on
the same random CIFAR-shaped data (uint8 pixels / 255, like CIFAR; labels 0..9) and network:

  keras_fit       our one-network training: datasets.make_train_dataset (authors' shift + flip)
                  + training.compile_classifier + model.fit, whole epochs, pipeline included.
  coteaching_fit  our fused Co-teaching: CoTeaching + datasets.make_coteaching_dataset + fit.
  authors_loop    the authors' Co-teaching loop ported as is: per batch their augmentation
                  (the same Keras layers, called on the numpy batch), model.predict twice,
                  numpy cross-entropy + argsort, train_on_batch twice on the kept samples.
  predict         held-out prediction as INCV does it: model.predict(x, batch_size=1024).
  pipeline        make_train_dataset alone (no model): what the input pipeline costs.
  torch_one/two   plain PyTorch ResNet (channels_last) one-net step / two-net Co-teaching
                  step, the peer reference (no augmentation); "n/a" without torch.

Every path runs once untimed (tracing, allocation), then --rounds times round-robin, so that
load from other processes on the machine hits all paths alike. The table shows the best round
(least disturbed); the JSON keeps each round's wall and CPU seconds. "img/CPU-s" (images per
CPU-second of this process) is a second, load-robust view on a shared machine.

The fp32 limit: a float32 matmul peak measured in each round (TF, same threads) divided by the
FLOPs an image costs on that path (convolution + dense layers counted from the layer shapes;
training = 3 x forward; Co-teaching = two networks; the authors' loop also predicts twice).

Not a pytest test: the file name does not match test_*.py, so pytest never collects it.
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", "--steps", dest="images", type=int, default=2560,
                   help="images per timed epoch (default 2560 = 20 steps of 128)")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--arch", default="resnet32")
    p.add_argument("--rounds", type=int, default=2, help="timed rounds after the warm-up one")
    p.add_argument("--forget_rate", type=float, default=0.2, help="Co-teaching forget rate")
    p.add_argument("--predict_images", type=int, default=10240)
    p.add_argument("--paths", nargs="+", default=None, help="run only these paths")
    p.add_argument("--steps_per_execution", type=int, default=1)
    p.add_argument("--intra_op", type=int, default=0, help="TF intra-op threads (0: TF's)")
    p.add_argument("--inter_op", type=int, default=0, help="TF inter-op threads (0: TF's)")
    p.add_argument("--onednn", choices=("on", "off", "env"), default="on",
                   help="TF_ENABLE_ONEDNN_OPTS before TF loads (TF leaves oneDNN off on CPUs "
                        "without AVX-512; 'env': keep the environment's)")
    p.add_argument("--precision", choices=("float32", "mixed_bfloat16"), default="float32",
                   help="Keras dtype policy of the Keras paths (bf16 only pays on CPUs with "
                        "avx512_bf16 / AMX)")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "benchmark.json"))
    return p.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.onednn != "env":  # read once, when TensorFlow's library loads
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if ARGS.onednn == "on" else "0"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, ROOT)

import keras
import tensorflow as tf

import data as datasets
import models
import training
import utils
from coteaching import CoTeaching


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


def keras_fit(args, data):
    model = training.compile_classifier(build(args, data),
                                     steps_per_execution=args.steps_per_execution)
    ds = datasets.make_train_dataset(data["x"], data["y"], batch_size=args.batch_size,
                                  augment="standard", seed=0)

    def epoch():
        model.fit(ds, epochs=1, verbose=0)
        return len(data["y"])
    return epoch


def coteaching_fit(args, data):
    cot = CoTeaching(build(args, data), build(args, data))
    cot.compile(optimizer1=keras.optimizers.Adam(1e-3), optimizer2=keras.optimizers.Adam(1e-3),
                steps_per_execution=args.steps_per_execution)
    cot.forget_rate.assign(args.forget_rate)
    n = len(data["y"])
    # All images in S, C empty: the same batches of --batch_size as the other paths.
    ds = datasets.make_coteaching_dataset(data["x"], data["y"], data["clean"], np.arange(n),
                                       np.arange(0), batch_size=args.batch_size,
                                       c_batch_size=0, augment="standard", seed=0)

    def epoch():
        cot.fit(ds, epochs=1, verbose=0)
        return n
    return epoch


def authors_loop(args, data):
    """Their per-step Python loop, with Keras 3 calls in place of Keras 2's."""
    nets = [training.compile_classifier(build(args, data)) for _ in range(2)]
    augment = datasets.make_augmenter("standard", seed=0)
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
    ds = datasets.make_train_dataset(data["x"], data["y"], batch_size=args.batch_size,
                                  augment="standard", seed=0)
    return lambda: sum(int(yb.shape[0]) for _, yb in ds)


# --------------------------------------------------------------------------- PyTorch peer

def torch_resnet(torch, depth, num_classes=10):
    """models.resnet32's architecture: 3 x (depth-2)/6 basic blocks of 16/32/64 filters,
    projection shortcut 1x1 conv + BN where the block downsamples or widens."""
    nn, F = torch.nn, torch.nn.functional

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout)
            self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout)
            self.proj = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride), nn.BatchNorm2d(cout))
                         if stride > 1 or cout != cin else nn.Identity())

        def forward(self, x):
            y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
            return F.relu(y + self.proj(x))

    blocks, cin = [nn.Conv2d(3, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU()], 16
    for stage, f in enumerate((16, 32, 64)):
        for b in range((depth - 2) // 6):
            blocks.append(Block(cin, f, 2 if stage > 0 and b == 0 else 1))
            cin = f
    blocks += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
    return nn.Sequential(*blocks).to(memory_format=torch.channels_last)


def torch_path(args, data, nets_count):
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(args.intra_op or os.cpu_count())  # as many threads as TF uses
    depth = int(args.arch.replace("resnet", ""))
    nets = [torch_resnet(torch, depth) for _ in range(nets_count)]
    opts = [torch.optim.Adam(n.parameters(), 1e-3) for n in nets]
    x = torch.from_numpy(data["x"]).permute(0, 3, 1, 2).contiguous(
        memory_format=torch.channels_last)
    y = torch.from_numpy(data["y"])
    ce = torch.nn.functional.cross_entropy

    def epoch():
        order = torch.randperm(len(y))
        for start in range(0, len(y), args.batch_size):
            idx = order[start:start + args.batch_size]
            xb, yb = x[idx], y[idx]
            for o in opts:
                o.zero_grad(set_to_none=True)
            if nets_count == 1:
                ce(nets[0](xb), yb).backward()
            else:  # Co-teaching: small-loss picks of each net train its peer
                l1 = ce(nets[0](xb), yb, reduction="none")
                l2 = ce(nets[1](xb), yb, reduction="none")
                keep = round(len(yb) * (1 - args.forget_rate))
                pick1 = torch.topk(-l1.detach(), keep).indices
                pick2 = torch.topk(-l2.detach(), keep).indices
                (l1[pick2].mean() + l2[pick1].mean()).backward()
            for o in opts:
                o.step()
        return len(y)
    return epoch


def torch_available():
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


# --------------------------------------------------------------------------- table

def paths(keep):
    """name: (builder, FLOPs per image in forward passes, PyTorch peer kind, table label);
    ``keep`` is the fraction of each batch the Co-teaching steps train on."""
    return {
        "keras_fit": (keras_fit, 3, "one", "one network: make_train_dataset + fit"),
        "coteaching_fit": (coteaching_fit, 6, "two",
                           "Co-teaching: CoTeaching + make_coteaching_dataset + fit"),
        "authors_loop": (authors_loop, 2 + 6 * keep, "two",
                         "authors' loop: 2x predict, numpy sort, 2x train_on_batch"),
        "predict": (predict, 1, None, "predict, batch 1024 (INCV held-out)"),
        "pipeline": (pipeline, 0, None, "input pipeline alone (shift + flip)"),
        "torch_one": (lambda a, d: torch_path(a, d, 1), 3, "one",
                      "PyTorch one network, channels_last"),
        "torch_two": (lambda a, d: torch_path(a, d, 2), 6, "two",
                      "PyTorch two-net Co-teaching step"),
    }


def _fmt(value, spec):
    return "n/a" if value is None else format(value, spec)


def summarize(results, table, peak, fwd):
    """Add the derived figures to ``results`` and return the Markdown table."""
    best = {k: max(r["images"] / r["wall_s"] for r in v["rounds"]) for k, v in results.items()}
    authors = best.get("authors_loop")
    torch_ref = {"one": best.get("torch_one"), "two": best.get("torch_two")}
    header = ("| path | images/s (best) | median | img/CPU-s | x authors' loop | x PyTorch "
              "| % of fp32 limit |")
    lines = [header, "|---|---|---|---|---|---|---|"]
    for name, (_, units, kind, label) in table.items():
        if name not in results:
            lines.append(f"| {label} |" + " n/a |" * 6)
            continue
        rounds, b = results[name]["rounds"], best[name]
        ref = torch_ref.get(kind)
        limit = peak * 1e9 / (units * fwd) if units else None  # images/s at the matmul peak
        r = results[name]
        r.update(best_images_per_s=b,
                 median_images_per_s=statistics.median(x["images"] / x["wall_s"]
                                                       for x in rounds),
                 images_per_cpu_s=max(x["images"] / x["cpu_s"] for x in rounds),
                 flops_per_image=units * fwd,
                 vs_authors=b / authors if authors else None,
                 vs_torch=b / ref if ref else None,
                 percent_of_fp32_limit=100 * b / limit if limit else None)
        lines.append(f"| {label} | {b:.0f} | {r['median_images_per_s']:.0f} | "
                     f"{r['images_per_cpu_s']:.0f} | {_fmt(r['vs_authors'], '.2f')} | "
                     f"{_fmt(r['vs_torch'], '.2f')} | "
                     f"{_fmt(r['percent_of_fp32_limit'], '.0f')}% |".replace("n/a%", "n/a"))
    return "\n".join(lines)


# --------------------------------------------------------------------------- main

def main(args):
    if args.inter_op or args.intra_op:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op)
    if args.precision != "float32":
        keras.mixed_precision.set_global_policy(args.precision)
    rng = np.random.default_rng(0)
    n = args.images
    data = {"x": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8).astype(np.float32) / 255,
            "y": rng.integers(0, 10, n), "clean": rng.random(n) < 0.8}
    fwd = forward_flops(build(args, data))
    table = paths(1 - args.forget_rate)
    wanted = args.paths or list(table)
    v1_resnet = args.arch in ("resnet20", "resnet32", "resnet44", "resnet56")
    if not (torch_available() and v1_resnet):  # the peer exists for the v1 ResNets only
        wanted = [p for p in wanted if not p.startswith("torch")]
    keras.utils.set_random_seed(0)
    runners = {k: table[k][0](args, data) for k in wanted}
    print(f"{args.arch}: {fwd / 1e6:.1f} MFLOP forward per image; {n} images x "
          f"{args.rounds} rounds; warming up...", flush=True)
    for run in runners.values():  # tracing and first allocations: not timed
        run()
    results = {k: {"rounds": []} for k in runners}
    peaks, loads = [], [os.getloadavg()[0]]
    for r in range(args.rounds):
        peaks.append(matmul_gflops())
        for name, run in runners.items():
            t, c = time.perf_counter(), time.process_time()
            images = run()
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            results[name]["rounds"].append({"images": images, "wall_s": wall, "cpu_s": cpu})
            print(f"  round {r + 1} {name}: {images / wall:.0f} images/s", flush=True)
        loads.append(os.getloadavg()[0])
    peak = max(peaks)
    markdown = summarize(results, table, peak, fwd)
    print(f"\nfp32 matmul peak {peak:.0f} GFLOP/s (best of {len(peaks)}); training limit "
          f"{peak * 1e9 / (3 * fwd):.0f} images/s per network; load average "
          f"{min(loads):.1f}..{max(loads):.1f} on {os.cpu_count()} CPUs\n")
    print(markdown)
    utils.write_json(args.out, {
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
        "args": vars(args), "forward_flops_per_image": fwd, "matmul_gflops": peaks,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "cpu": cpu_features(),
        "cpu_count": os.cpu_count(), "load_average": loads,
        "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                    "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                     "torch": __import__("torch").__version__ if torch_available() else None},
        "paths": results, "table": markdown})
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main(ARGS)
